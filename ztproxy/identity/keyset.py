"""One issuer's verification keys, indexed by (kid, alg).

Takes a parsed JWKS document (from an issuer's endpoint, a file or the config: trusted
only as far as the transport that brought it) and the issuer's configured algorithms.
Returns a `KeySet` that answers "the key for this kid and this alg", or nothing.

A JWK is kept only if it can serve a configured algorithm: its `kty`/`crv` fit the
algorithm, its own `alg` (when present) is that algorithm, its `use` (when present) is
`sig`, its `key_ops` (when present) allow `verify`, it holds no private or symmetric
material, and an RSA key has at least 2048 bits. Everything else is skipped and counted,
so a JWKS can never turn an RSA public key into an HMAC secret (alg confusion).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt import PyJWK

from ..config.identity import PRIVATE_JWK_MEMBERS

MAX_KID_LENGTH = 256
MAX_KEYS = 100

# alg -> (kty, allowed curves or None when the kty has no curve)
_ALG_KEY_TYPES: Mapping[str, tuple[str, frozenset[str] | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}


@dataclass(frozen=True, slots=True)
class KeySet:
    """Keys by (kid, alg). `kids` lists every kid that has at least one usable key."""

    keys: Mapping[tuple[str, str], PyJWK]
    kids: frozenset[str]
    skipped: int = 0
    # (kid, alg) -> the key's RFC 7638 JWK thumbprint: the key's identity. Caches of
    # verified tokens remember it, not the kid: a new key published under an old kid
    # has another thumbprint, so nothing verified under the old key is served for it.
    thumbprints: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def find(self, kid: str, alg: str) -> PyJWK | None:
        return self.keys.get((kid, alg))

    def thumbprint(self, kid: str, alg: str) -> str | None:
        return self.thumbprints.get((kid, alg))

    def __len__(self) -> int:
        return len(self.keys)


EMPTY = KeySet(keys={}, kids=frozenset())


def build_keyset(doc: Any, algorithms: tuple[str, ...]) -> KeySet:
    """Index a JWKS document. Raises ValueError when `doc` is not a JWKS at all
    (not an object, no `keys` list, too many keys); single bad keys are skipped."""
    if isinstance(doc, list):
        raw_keys: Any = doc
    elif isinstance(doc, Mapping):
        raw_keys = doc.get("keys")
    else:
        raise ValueError("JWKS must be a JSON object")
    if not isinstance(raw_keys, list):
        raise ValueError("JWKS has no keys list")
    if len(raw_keys) > MAX_KEYS:
        raise ValueError(f"JWKS has more than {MAX_KEYS} keys")
    keys: dict[tuple[str, str], PyJWK] = {}
    thumbs: dict[tuple[str, str], str] = {}
    skipped = 0
    for raw in raw_keys:
        usable = _usable_algorithms(raw, algorithms)
        if not usable:
            skipped += 1
            continue
        kid = str(raw["kid"])
        for alg in usable:
            if (kid, alg) in keys:
                skipped += 1  # the first key wins; a second one with the same id is ignored
                continue
            key = _load(raw, alg)
            if key is None:
                skipped += 1
                continue
            keys[(kid, alg)] = key
            thumbs[(kid, alg)] = jwk_thumbprint(raw)
    return KeySet(
        keys=keys, kids=frozenset(kid for kid, _ in keys), skipped=skipped, thumbprints=thumbs
    )


_THUMBPRINT_MEMBERS = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
}


def jwk_thumbprint(raw: Mapping[str, Any]) -> str:
    """RFC 7638: SHA-256 over the required public members in lexicographic order, as
    compact JSON; base64url without padding. The members were checked by PyJWK."""
    members = _THUMBPRINT_MEMBERS.get(str(raw.get("kty")), ())
    doc = {m: raw[m] for m in members if m in raw} if members else dict(raw)
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _usable_algorithms(raw: Any, algorithms: tuple[str, ...]) -> tuple[str, ...]:
    if not isinstance(raw, Mapping):
        return ()
    kid = raw.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
        return ()
    if PRIVATE_JWK_MEMBERS & raw.keys():
        return ()
    if "use" in raw and raw["use"] != "sig":
        return ()
    ops = raw.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return ()
    own_alg = raw.get("alg")
    return tuple(
        alg for alg in algorithms if (own_alg is None or own_alg == alg) and _fits(raw, alg)
    )


def _fits(raw: Mapping[str, Any], alg: str) -> bool:
    kty, curves = _ALG_KEY_TYPES.get(alg, ("", None))
    if raw.get("kty") != kty:
        return False
    return curves is None or raw.get("crv") in curves


def _load(raw: Mapping[str, Any], alg: str) -> PyJWK | None:
    try:
        key = PyJWK(dict(raw), algorithm=alg)
        prepared = key.Algorithm.prepare_key(key.key)
        if key.Algorithm.check_key_length(prepared) is not None:
            return None  # e.g. RSA under 2048 bits
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None
    if hasattr(prepared, "private_bytes"):
        return None  # a private key object: never a trust anchor
    return key
