"""Bundle signatures as OPA writes and checks them (bundle/sign.go, bundle/verify.go).

`.signatures.json` is `{"signatures": ["<JWS compact>"]}` with exactly one token. Its
payload is `{"files": [{"name", "hash", "algorithm"}], "keyid"?, "scope"?, "iat"?,
"iss"?}`; names are bundle paths without a leading "/" ("data.json", ".manifest",
"authz/policy.rego"). The key id is the token header's `kid`, else the payload's
(deprecated) `keyid`, else (naming none) the only configured key; the key's
configured algorithm is the only one accepted (never the token's choice). The payload's `scope`
must equal the key's configured scope ("" when neither is set).

Stricter than OPA, on purpose: `none` is never accepted; HMAC (HS256/384/512) only for
a key configured with a secret, never a public key; `exp`/`nbf` are honoured when
present (OPA ignores them); MD5 and SHA-1 file digests are refused; a file listed twice
in the payload is refused. Then every file of the bundle except `.signatures.json`
must be listed with a matching digest, and every listed file must be in the bundle.

Key material is only ever passed to PyJWT; no message here carries it or the token.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from .opahash import ALGORITHMS, WEAK, file_digest
from .refusal import (
    ALGORITHM,
    DATA,
    DIGEST,
    EXPIRED,
    FILE_MISSING,
    FILE_UNSIGNED,
    SIGNATURE,
    UNKNOWN_KEY,
    UNSUPPORTED,
    BundleRefused,
)

SIGNATURES_FILE = ".signatures.json"
ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
HMAC = frozenset({"HS256", "HS384", "HS512"})


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One configured key: `key` is a public key object (asymmetric algorithms) or
    the secret bytes (HMAC, only when configured with a secret file)."""

    key_id: str
    algorithm: str
    key: Any
    scope: str = ""

    def __repr__(self) -> str:
        return f"VerificationKey({self.key_id!r}, {self.algorithm!r}, [secure])"


@dataclass(frozen=True, slots=True)
class SignedFile:
    name: str
    hash: str
    algorithm: str


def _b64json(part: str, what: str) -> Any:
    try:
        padded = part + "=" * (-len(part) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, RecursionError):
        raise BundleRefused(SIGNATURE, f"JWT {what} is not base64url JSON") from None


def _token(raw: bytes) -> str:
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise BundleRefused(SIGNATURE, ".signatures.json is not JSON") from None
    if not isinstance(doc, dict):
        raise BundleRefused(SIGNATURE, ".signatures.json is not an object")
    if doc.get("plugin"):
        raise BundleRefused(UNSUPPORTED, ".signatures.json names a verifier plugin")
    tokens = doc.get("signatures")
    if not isinstance(tokens, list) or len(tokens) != 1 or not isinstance(tokens[0], str):
        raise BundleRefused(SIGNATURE, ".signatures.json must hold exactly one JWT")
    return tokens[0]


def verify_signature(
    raw: bytes,
    keys: Mapping[str, VerificationKey],
    *,
    now: Callable[[], float] = time.time,
) -> dict[str, SignedFile]:
    """The files the signature lists, by name, once the JWT verifies; else BundleRefused."""
    token = _token(raw)
    parts = token.split(".")
    if len(parts) != 3:
        raise BundleRefused(SIGNATURE, "JWT is not in compact form")
    header = _b64json(parts[0], "header")
    payload = _b64json(parts[1], "payload")
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise BundleRefused(SIGNATURE, "JWT header or payload is not an object")
    alg = header.get("alg")
    kid = header.get("kid") or payload.get("keyid")
    if not kid and len(keys) == 1:
        # OPA verifies with its configured key id first (`--verification-key-id`,
        # bundle `signing.keyid`); a token naming none meets the one key configured
        kid = next(iter(keys))
    if not isinstance(kid, str) or not kid:
        raise BundleRefused(UNKNOWN_KEY, "JWT names no key id")
    key = keys.get(kid)
    if key is None:
        raise BundleRefused(UNKNOWN_KEY, f"key id {kid[:60]!r} is not configured")
    if not isinstance(alg, str) or alg != key.algorithm or alg not in ASYMMETRIC | HMAC:
        raise BundleRefused(
            ALGORITHM, f"JWT algorithm {str(alg)[:20]!r}; key {kid[:60]!r} allows {key.algorithm}"
        )
    try:
        jwt.api_jws.PyJWS().decode_complete(token, key.key, algorithms=[key.algorithm])
    except jwt.InvalidAlgorithmError:
        raise BundleRefused(ALGORITHM, f"JWT algorithm not allowed for key {kid[:60]!r}") from None
    except (jwt.PyJWTError, ValueError, TypeError):
        raise BundleRefused(
            SIGNATURE, f"JWT signature does not verify with key {kid[:60]!r}"
        ) from None
    _check_times(payload, now())
    if payload.get("scope", "") != key.scope:
        raise BundleRefused(SIGNATURE, "JWT scope does not match the key's scope")
    return _files(payload.get("files"))


def _check_times(payload: Mapping[str, Any], now: float) -> None:
    for claim in ("exp", "nbf"):
        value = payload.get(claim)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BundleRefused(SIGNATURE, f"JWT {claim} is not a number")
        if claim == "exp" and now >= value:
            raise BundleRefused(EXPIRED, "JWT has expired")
        if claim == "nbf" and now < value:
            raise BundleRefused(SIGNATURE, "JWT is not valid yet")


def _files(listed: Any) -> dict[str, SignedFile]:
    if not isinstance(listed, list):
        raise BundleRefused(SIGNATURE, "JWT payload has no files list")
    out: dict[str, SignedFile] = {}
    for entry in listed:
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) for k in ("name", "hash", "algorithm")
        ):
            raise BundleRefused(SIGNATURE, "JWT payload file entry is malformed")
        name, algorithm = entry["name"], entry["algorithm"]
        if name in out:
            raise BundleRefused(SIGNATURE, f"file {name[:80]!r} is listed twice")
        if algorithm in WEAK or algorithm not in ALGORITHMS:
            raise BundleRefused(ALGORITHM, f"file {name[:80]!r}: hash {algorithm[:20]!r}")
        out[name] = SignedFile(name, entry["hash"].lower(), algorithm)
    return out


def verify_files(files: Iterable[tuple[str, bytes]], signed: Mapping[str, SignedFile]) -> None:
    """Every bundle file listed with its digest, and nothing listed missing."""
    remaining = dict(signed)
    for name, content in files:
        if name == SIGNATURES_FILE:
            continue
        entry = remaining.pop(name, None)
        if entry is None:
            raise BundleRefused(FILE_UNSIGNED, f"file {name[:80]!r} is not in the signature")
        try:
            digest = file_digest(name, content, entry.algorithm)
        except (ValueError, RecursionError):
            raise BundleRefused(DATA, f"file {name[:80]!r} does not parse") from None
        if not hmac.compare_digest(digest, entry.hash):
            raise BundleRefused(DIGEST, f"file {name[:80]!r}: digest does not match the signature")
    if remaining:
        shown = ", ".join(sorted(n[:80] for n in remaining)[:3])
        raise BundleRefused(FILE_MISSING, f"signed but not in the bundle: {shown}")


def sign_files(
    files: Iterable[tuple[str, bytes]], private_key: Any, algorithm: str, key_id: str | None
) -> bytes:
    """`.signatures.json` for these files, as `opa build --signing-key` writes it: the
    files with SHA-256 digests, the deprecated `keyid` claim and the `kid` header when a
    key id is given."""
    if algorithm not in ASYMMETRIC | HMAC:
        raise ValueError(f"signing algorithm {algorithm!r} not supported")
    listed = [
        {"name": name, "hash": file_digest(name, content), "algorithm": "SHA-256"}
        for name, content in files
        if name != SIGNATURES_FILE
    ]
    claims: dict[str, Any] = {"files": listed}
    headers: dict[str, Any] = {}
    if key_id:
        claims["keyid"] = key_id
        headers["kid"] = key_id
    token = jwt.api_jws.encode(
        json.dumps(claims).encode("utf-8"), private_key, algorithm=algorithm, headers=headers
    )
    return json.dumps({"signatures": [token]}, indent=1).encode("utf-8")
