"""Dev token material: signing keys, public JWKs, RFC 8705 thumbprints, and minted JWTs.

Stage: none (tooling for `ztproxy token mint`, the demo and the tests). Takes a private key
and claims; returns a signed compact JWT. Trusts its caller completely: `claims` and
`headers` are merged last so tests can forge any shape (expired, wrong aud, alg confusion,
a missing claim via `OMIT`). Never logs or prints key material; the CLI prints only the
token, to stdout.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import jwt
import jwt.algorithms
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


OMIT: Final = _Omit()
"""A claim value meaning "remove this claim" (e.g. `claims={"exp": OMIT}`)."""

_EC_CURVES: dict[str, ec.EllipticCurve] = {
    "ES256": ec.SECP256R1(),
    "ES384": ec.SECP384R1(),
    "ES512": ec.SECP521R1(),
}
RSA_ALGS: Final = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})


def x5t_s256(cert: x509.Certificate | bytes) -> str:
    """RFC 8705 thumbprint: base64url (no padding) of SHA-256 of the DER certificate.

    Accepts a certificate, PEM bytes (the first certificate) or DER bytes.
    """
    if isinstance(cert, x509.Certificate):
        der = cert.public_bytes(serialization.Encoding.DER)
    elif cert.lstrip().startswith(b"-----BEGIN"):
        der = x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
    else:
        der = bytes(cert)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


def generate_signing_key(alg: str = "ES256") -> PrivateKeyTypes:
    """A fresh key for `alg`: EC for ES256/384/512, RSA 2048 for RS*/PS*, Ed25519 for EdDSA."""
    if alg in _EC_CURVES:
        return ec.generate_private_key(_EC_CURVES[alg])
    if alg in RSA_ALGS:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported signing algorithm {alg!r}")


def alg_for_key(key: PrivateKeyTypes) -> str:
    """The natural JWS algorithm for a key (used when the caller does not name one)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        by_curve = {c.name: a for a, c in _EC_CURVES.items()}
        if key.curve.name in by_curve:
            return by_curve[key.curve.name]
    elif isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise ValueError(f"no JWS algorithm for a {type(key).__name__}")


def public_jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    """The public JWK of `key` (private or public) with kid, alg and use="sig"."""
    public = key.public_key() if hasattr(key, "public_key") else key
    algorithm = jwt.algorithms.get_default_algorithms()[alg]
    jwk: dict[str, Any] = dict(algorithm.to_jwk(public, as_dict=True))
    jwk.update(kid=kid, alg=alg, use="sig")
    return jwk


def jwks(*jwks_entries: dict[str, Any]) -> dict[str, Any]:
    """A JWK Set: {"keys": [...]}."""
    return {"keys": list(jwks_entries)}


def load_private_key(path: str | Path) -> PrivateKeyTypes:
    """Load an unencrypted PEM private key (PKCS8 or traditional)."""
    return serialization.load_pem_private_key(Path(path).read_bytes(), password=None)


def mint_token(
    *,
    key: PrivateKeyTypes,
    kid: str,
    issuer: str,
    audience: str | Sequence[str],
    subject: str,
    alg: str = "ES256",
    ttl: int = 600,
    claims: Mapping[str, Any] | None = None,
    bind_cert: x509.Certificate | bytes | None = None,
    now: int | None = None,
    headers: Mapping[str, Any] | None = None,
) -> str:
    """Sign a JWT with iss, aud, sub, iat, nbf, exp (= now + ttl), a random jti, and, when
    `bind_cert` is given, `cnf: {"x5t#S256": ...}` (RFC 8705). `claims` are merged last (a
    value of `OMIT` removes the claim); `headers` are merged over {"kid": kid}."""
    issued_at = int(time.time()) if now is None else now
    payload: dict[str, Any] = {
        "iss": issuer,
        "aud": audience if isinstance(audience, str) else list(audience),
        "sub": subject,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": issued_at + ttl,
        "jti": secrets.token_urlsafe(16),
    }
    if bind_cert is not None:
        payload["cnf"] = {"x5t#S256": x5t_s256(bind_cert)}
    for name, value in (claims or {}).items():
        if value is OMIT:
            payload.pop(name, None)
        else:
            payload[name] = value
    header: dict[str, Any] = {"kid": kid, **(headers or {})}
    return jwt.encode(payload, key, algorithm=alg, headers=header)  # type: ignore[arg-type]
