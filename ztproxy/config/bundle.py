"""Config section `policy.bundle:`: where the embedded engine's OPA bundle comes from.

Takes the `policy.bundle` Node; returns a frozen `BundleConfig` (or None when the
section is absent). Keys are loaded here, so a bad key fails `check-config` with its
key path (`policy.bundle.keys.global.key_file`). Secrets are paths in the file,
never inline: `secret_file` (HMAC, only when the algorithm is HS*) and
`headers_from_file` (e.g. an `Authorization: Bearer ...` line) are read as files, and
neither their content nor the key material appears in a repr, a log or an error.

```yaml
policy:
  bundle:
    url: https://bundles.internal/ztproxy/bundle.tar.gz
    poll_min_seconds: 10
    poll_max_seconds: 20
    ca_file: certs/bundle-ca.pem
    persist_dir: /var/lib/ztproxy/bundle
    headers_from_file: /run/secrets/bundle-headers
    keys:
      global: {key_file: keys/bundle-signer.pub.pem, algorithm: RS256}
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .reader import Node

ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
HMAC = ("HS256", "HS384", "HS512")
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


@dataclass(frozen=True, slots=True)
class BundleKey:
    key_id: str
    algorithm: str
    key: Any = field(repr=False)  # public key object, or the HMAC secret bytes
    scope: str = ""


@dataclass(frozen=True, slots=True)
class BundleConfig:
    url: str
    keys: tuple[BundleKey, ...] = ()
    allow_unsigned: bool = False
    poll_min_seconds: float = 10.0
    poll_max_seconds: float = 20.0
    timeout_seconds: float = 10.0
    ca_file: str | None = None
    persist_dir: str | None = None
    headers_from_file: str | None = None
    size_limit_bytes: int = 64 << 20  # one member, as OPA's size_limit_bytes
    max_total_bytes: int = 256 << 20  # the expanded archive


def _key(node: Node, key_id: str) -> BundleKey | None:
    algorithm = node.choice("algorithm", ASYMMETRIC + HMAC, "RS256")
    scope = node.str("scope", "")
    key: Any = None
    if algorithm in HMAC:
        path = node.path_value("secret_file", required=True)
        if node.has("key_file"):
            node.error("an HMAC key is a secret_file, not a public key_file", "key_file")
        if path:
            try:
                with open(path, "rb") as fh:
                    key = fh.read().strip()
            except OSError:
                node.error("cannot read", "secret_file")
            if key is not None and len(key) < 32:
                node.error("an HMAC secret must be at least 32 bytes", "secret_file")
                key = None
    else:
        path = node.path_value("key_file", required=True)
        if node.has("secret_file"):
            node.error(f"{algorithm} takes a public key_file, not a secret_file", "secret_file")
        if path:
            try:
                with open(path, "rb") as fh:
                    key = load_pem_public_key(fh.read())
            except (OSError, ValueError, TypeError):
                node.error("not a PEM public key", "key_file")
    node.finish()
    if key is None:
        return None
    return BundleKey(key_id, algorithm, key, scope or "")


def parse_bundle(parent: Node) -> BundleConfig | None:
    """Read `policy.bundle`; None when absent. Every problem is recorded on the node."""
    if not parent.has("bundle") or parent.raw("bundle") is None:
        parent.raw("bundle")  # mark it read
        return None
    node = parent.section("bundle")
    url = node.str("url", "", required=True)
    parts = urlsplit(url)
    if url and (parts.scheme not in ("http", "https") or not parts.hostname):
        node.error("must be an http(s) URL", "url")
    elif url and parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        node.error("must be https (plain http only for a loopback host)", "url")
    elif url and parts.username:
        node.error("must not carry credentials (use headers_from_file)", "url")
    keys: list[BundleKey] = []
    keys_node = node.section("keys")
    if keys_node.is_mapping():
        for key_id in list(keys_node.value):
            key = _key(keys_node.section(str(key_id)), str(key_id))
            if key is not None:
                keys.append(key)
    allow_unsigned = node.bool("allow_unsigned", False)
    if not keys_node.value and not allow_unsigned:
        node.error("needs at least one verification key (or allow_unsigned: true)", "keys")
    poll_min = node.number("poll_min_seconds", 10.0, min=0.05, max=86_400)
    poll_max = node.number("poll_max_seconds", max(poll_min, 20.0), min=0.05, max=86_400)
    if poll_max < poll_min:
        node.error("must be at least poll_min_seconds", "poll_max_seconds")
        poll_max = poll_min
    ca = node.path_value("ca_file")
    if ca and not url.startswith("https://"):
        node.error("ca_file is set but url is not https", "ca_file")
    cfg = BundleConfig(
        url=url,
        keys=tuple(keys),
        allow_unsigned=allow_unsigned,
        poll_min_seconds=poll_min,
        poll_max_seconds=poll_max,
        timeout_seconds=node.number("timeout_seconds", 10.0, min=0.1, max=600),
        ca_file=ca,
        persist_dir=node.path_value("persist_dir", must_exist=False),
        headers_from_file=node.path_value("headers_from_file"),
        size_limit_bytes=node.int("size_limit_bytes", 64 << 20, min=1024, max=1 << 30),
        max_total_bytes=node.int("max_total_bytes", 256 << 20, min=1024, max=4 << 30),
    )
    node.finish()
    return cfg
