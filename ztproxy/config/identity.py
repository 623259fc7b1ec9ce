"""Config section `identity`: the token issuers the proxy trusts, and where tokens travel.

Takes the parsed YAML under `identity:` (a `Node`), returns a frozen `IdentityConfig`.
Every problem is reported with its key path (`identity.issuers[1].algorithms[0]: ...`)
and parsing goes on, so one `check-config` run lists them all. An absent section is
valid and means "no issuers" (routes must then say `user: none` / `device: none`).

Trusts nothing in the file: algorithms are restricted to asymmetric ones (no `none`, no
HS*), inline JWKS must be public keys only, and a plain-http `jwks_uri` is accepted for
loopback hosts only (tests, a local sidecar), never across a network.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .reader import Node

ALLOWED_ALGORITHMS: tuple[str, ...] = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "EdDSA",
)
KINDS: tuple[str, ...] = ("user", "device")
# JWK members that only a private or symmetric key has: never accepted as trust anchors.
PRIVATE_JWK_MEMBERS: frozenset[str] = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
_RESERVED_HEADERS = frozenset(
    {
        "authorization",
        "cookie",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "proxy-authorization",
    }
)
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    """One trusted issuer. Exactly one of `jwks_uri`, `jwks_file`, `jwks` is set.

    `jwks` is an inline JWKS document (`{"keys": [...]}`, public keys only).
    `required_claims` always contains `exp`, and `sub` (user) or `device_id_claim`
    (device), whatever the file says: a token without them cannot be used safely."""

    name: str
    kind: str
    issuer: str
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...]
    jwks_uri: str | None = None
    jwks_file: str | None = None
    jwks: Mapping[str, Any] | None = None
    jwks_ca_file: str | None = None
    required_claims: tuple[str, ...] = ("exp", "iat", "sub")
    leeway_seconds: int = 30
    jwks_cache_ttl_seconds: int = 600
    jwks_refresh_min_interval_seconds: int = 30
    jwks_stale_window_seconds: int = 3600
    device_id_claim: str = "sub"


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    issuers: tuple[IssuerConfig, ...] = ()
    device_header: str = "device-authorization"
    token_cache_size: int = 10000

    def by_kind(self, kind: str) -> tuple[IssuerConfig, ...]:
        return tuple(i for i in self.issuers if i.kind == kind)


def parse_identity(node: Node) -> IdentityConfig:
    issuers = tuple(
        issuer for item in node.items("issuers") if (issuer := _parse_issuer(item)) is not None
    )
    device_header = _parse_device_header(node)
    cache_size = node.int("token_cache_size", 10000, min=0, max=1_000_000)
    node.finish()
    _check_issuers(node, issuers)
    return IdentityConfig(issuers=issuers, device_header=device_header, token_cache_size=cache_size)


def _parse_device_header(node: Node) -> str:
    raw = node.str("device_header", "device-authorization")
    value = str(raw).strip().lower()
    if not _HEADER_NAME.match(value):
        node.error(f"{raw!r} is not a valid header name", "device_header")
        return "device-authorization"
    if value in _RESERVED_HEADERS:
        node.error(f"{value} cannot carry the device token", "device_header")
        return "device-authorization"
    return value


def _parse_issuer(node: Node) -> IssuerConfig | None:
    if not node.is_mapping():
        node.error(f"must be a mapping, not {type(node.value).__name__}")
        return None
    name = node.str("name", "", required=True)
    if name and not _NAME.match(name):
        node.error("must be lowercase letters, digits, '.', '_' or '-' (at most 63)", "name")
    kind = node.choice("kind", KINDS, "user") if node.has("kind") else _missing(node, "kind")
    issuer = node.str("issuer", "", required=True)
    audiences = node.str_list("audiences", required=True)
    if node.has("audiences") and not audiences:
        node.error("needs at least one audience", "audiences")
    algorithms = _parse_algorithms(node)
    jwks_uri, jwks_file, jwks = _parse_jwks_source(node)
    ca_file = node.path_value("jwks_ca_file")
    if ca_file is not None and jwks_uri is None:
        node.error("only applies to an https jwks_uri", "jwks_ca_file")
    device_id_claim = node.str("device_id_claim", "sub") or "sub"
    required = node.str_list("required_claims", ("exp", "iat", "sub"))
    always = ("exp", device_id_claim if kind == "device" else "sub")
    required = tuple(dict.fromkeys((*always, *required)))
    leeway = node.int("leeway_seconds", 30, min=0, max=60)
    ttl = node.int("jwks_cache_ttl_seconds", 600, min=1, max=86400)
    min_interval = node.int("jwks_refresh_min_interval_seconds", 30, min=1, max=3600)
    stale = node.int("jwks_stale_window_seconds", 3600, min=0, max=86400)
    if isinstance(ttl, int) and isinstance(min_interval, int) and ttl < min_interval:
        node.error(
            f"must be at least jwks_refresh_min_interval_seconds ({min_interval})",
            "jwks_cache_ttl_seconds",
        )
    node.finish()
    return IssuerConfig(
        name=name or "",
        kind=kind,
        issuer=issuer or "",
        audiences=audiences,
        algorithms=algorithms,
        jwks_uri=jwks_uri,
        jwks_file=jwks_file,
        jwks=jwks,
        jwks_ca_file=ca_file,
        required_claims=required,
        leeway_seconds=leeway,
        jwks_cache_ttl_seconds=ttl,
        jwks_refresh_min_interval_seconds=min_interval,
        jwks_stale_window_seconds=stale,
        device_id_claim=device_id_claim,
    )


def _missing(node: Node, key: str) -> str:
    node.error("is required (user or device)", key)
    return "user"


def _parse_algorithms(node: Node) -> tuple[str, ...]:
    raw: tuple[str, ...] = node.str_list("algorithms", required=True)
    out: list[str] = []
    for i, alg in enumerate(raw):
        path = f"{node.path}.algorithms[{i}]"
        if alg.lower() == "none":
            node.problems.add(path, f"{alg} is not allowed (unsigned)")
        elif alg.upper().startswith("HS"):
            node.problems.add(path, f"{alg} is not allowed (symmetric)")
        elif alg not in ALLOWED_ALGORITHMS:
            node.problems.add(
                path, f"{alg} is not supported; use one of {', '.join(ALLOWED_ALGORITHMS)}"
            )
        elif alg not in out:
            out.append(alg)
    if node.has("algorithms") and raw and not out:
        node.error("needs at least one allowed algorithm", "algorithms")
    return tuple(out)


def _parse_jwks_source(node: Node) -> tuple[str | None, str | None, Mapping[str, Any] | None]:
    given = [k for k in ("jwks_uri", "jwks_file", "jwks") if node.has(k)]
    if len(given) != 1:
        node.error(
            "needs exactly one of jwks_uri, jwks_file, jwks"
            + (f" (got {', '.join(given)})" if given else "")
        )
    uri = node.str("jwks_uri")
    if uri is not None:
        uri = _check_uri(node, uri)
    file = node.path_value("jwks_file")
    inline = _parse_inline(node, node.raw("jwks")) if node.has("jwks") else None
    return uri, file, inline


def _check_uri(node: Node, uri: str) -> str | None:
    parts = urlsplit(uri)
    if parts.scheme == "https" and parts.hostname:
        return uri
    if parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS:
        return uri
    node.error("must be an https URL (plain http only for a loopback host)", "jwks_uri")
    return None


def _parse_inline(node: Node, raw: Any) -> Mapping[str, Any] | None:
    keys = raw.get("keys") if isinstance(raw, dict) else raw
    if not isinstance(keys, list) or not keys:
        node.error("must be a JWKS ({keys: [...]}) or a non-empty list of JWKs", "jwks")
        return None
    ok = True
    for i, key in enumerate(keys):
        path = f"{node.path}.jwks[{i}]" if isinstance(raw, list) else f"{node.path}.jwks.keys[{i}]"
        if not isinstance(key, dict):
            node.problems.add(path, "must be a mapping")
            ok = False
        elif PRIVATE_JWK_MEMBERS & key.keys():
            node.problems.add(
                path, "holds private or symmetric key material; give public keys only"
            )
            ok = False
        elif not isinstance(key.get("kid"), str) or not key.get("kid"):
            node.problems.add(path, "needs a kid (tokens choose their key by kid)")
            ok = False
    return {"keys": [dict(k) for k in keys]} if ok else None


def _check_issuers(node: Node, issuers: tuple[IssuerConfig, ...]) -> None:
    seen_names: set[str] = set()
    seen_iss: dict[tuple[str, str], int] = {}
    for i, iss in enumerate(issuers):
        path = f"{node.path}.issuers[{i}]"
        if iss.name in seen_names:
            node.problems.add(f"{path}.name", f"duplicate issuer name {iss.name!r}")
        seen_names.add(iss.name)
        key = (iss.kind, iss.issuer)
        if key in seen_iss:
            node.problems.add(
                f"{path}.issuer",
                f"same iss and kind as issuers[{seen_iss[key]}]"
                " (a token could not tell which one it belongs to)",
            )
        seen_iss.setdefault(key, i)
    # One iss for both kinds is allowed only when the audiences keep them apart;
    # otherwise a user token would pass as a device token and the reverse.
    for i, a in enumerate(issuers):
        for j, b in enumerate(issuers):
            if (
                i < j
                and a.issuer == b.issuer
                and a.kind != b.kind
                and set(a.audiences) & set(b.audiences)
            ):
                node.problems.add(
                    f"{node.path}.issuers[{j}].audiences",
                    f"overlaps issuers[{i}] (same iss, other kind): user and "
                    "device tokens would be interchangeable",
                )
