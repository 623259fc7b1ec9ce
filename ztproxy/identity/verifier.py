"""The pinned JWT contract: one compact JWS in, verified claims out, or a reason code.

Takes a token (untrusted bytes from a header), the kind expected from where it came
(`user` from Authorization, `device` from the device header) and the issuers' keys.
Returns a `Verified`; raises `Unauthenticated(reason)` or, when the keys the token
needs are not available, `ServiceUnavailable("issuer_keys_unavailable")`.

PyJWT checks the signature, `iss`, `aud` and the presence of required claims; this
module decides everything PyJWT would otherwise take from the token or leave open:

- the algorithm comes from the issuer's config; the token's `alg` is only compared;
- the issuer is found by exact `iss` among the issuers of the expected kind, and the
  key by `kid` in that issuer's JWKS only, matching kty/crv/alg/use (see keyset);
- `jku`, `x5u`, `jwk`, `x5c` (keys or key URLs chosen by the sender) and `b64`
  (unencoded payloads) are refused, never followed; any `crit` is refused, since we
  implement no extension;
- header and payload are parsed strictly first: duplicate names are refused (PyJWT
  alone keeps the last one), base64url must be canonical;
- `exp`, `nbf`, `iat` must be JSON integers (PyJWT alone accepts strings and floats)
  and are checked against the injected clock with the issuer's leeway.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from ..config.identity import ALLOWED_ALGORITHMS, IssuerConfig
from ..errors import Unauthenticated
from . import strictjson
from .issuer_keys import IssuerKeys
from .keyset import MAX_KID_LENGTH

MAX_TOKEN_LENGTH = 16 * 1024
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "b64"})
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


@dataclass(frozen=True, slots=True)
class Verified:
    issuer: IssuerConfig
    kid: str
    claims: dict[str, Any]
    subject: str
    expires_at: int
    alg: str = ""
    key_thumbprint: str = ""  # RFC 7638 thumbprint of the key that verified the token


def _fail(reason: str, detail: str = "") -> Unauthenticated:
    return Unauthenticated(reason, detail)


def b64url_decode(segment: str) -> bytes:
    """Canonical base64url without padding; anything else is malformed."""
    if not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise _fail("malformed_token", "not base64url")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise _fail("malformed_token", "not base64url") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != segment:
        raise _fail("malformed_token", "non-canonical base64url")
    return raw


def _json_object(segment: str, part: str) -> dict[str, Any]:
    try:
        value = strictjson.loads(b64url_decode(segment))
    except strictjson.DuplicateMember:
        raise _fail("duplicate_claims", f"duplicate member in {part}") from None
    except ValueError:
        raise _fail("malformed_token", f"{part} is not JSON") from None
    if not isinstance(value, dict):
        raise _fail("malformed_token", f"{part} is not a JSON object")
    return value


def _int_claim(claims: Mapping[str, Any], name: str) -> int | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail("invalid_claim", f"{name} must be an integer")
    return value


class TokenVerifier:
    def __init__(self, issuers: Iterable[IssuerKeys], clock: Callable[[], float]) -> None:
        self._by_iss: dict[str, dict[str, IssuerKeys]] = {}
        for keys in issuers:
            self._by_iss.setdefault(keys.config.issuer, {})[keys.config.kind] = keys
        self._clock = clock
        self._jwt = jwt.PyJWT()

    async def verify(self, token: str, kind: str) -> Verified:
        if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise _fail("malformed_token", "too long or not ASCII")
        parts = token.split(".")
        if len(parts) != 3:
            raise _fail("malformed_token", f"{len(parts)} segments")
        header = _json_object(parts[0], "header")
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise _fail("malformed_token", "alg missing")
        if alg not in ALLOWED_ALGORITHMS:
            raise _fail("disallowed_alg", "alg not allowed")
        if FORBIDDEN_HEADERS & header.keys():
            raise _fail("forbidden_header", ",".join(sorted(FORBIDDEN_HEADERS & header.keys())))
        if "crit" in header:
            raise _fail("unsupported_crit", "crit header")
        claims = _json_object(parts[1], "payload")
        b64url_decode(parts[2])  # PyJWT alone accepts "=" padding: a second spelling
        keys = self._issuer(claims, kind)
        issuer = keys.config
        if alg not in issuer.algorithms:
            raise _fail("disallowed_alg", f"alg not allowed for issuer {issuer.name}")
        kid = header.get("kid")
        if kid is None:
            raise _fail("unknown_kid", "token has no kid")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
            raise _fail("malformed_token", "kid must be a short string")
        key, kid_known, thumbprint = await keys.find(kid, alg)
        if key is None:
            raise _fail("key_alg_mismatch" if kid_known else "unknown_kid", f"issuer {issuer.name}")
        self._check_with_pyjwt(token, key, alg, issuer)
        verified = self._check_claims(claims, issuer, kid)
        return dataclasses.replace(verified, alg=alg, key_thumbprint=thumbprint)

    def _issuer(self, claims: Mapping[str, Any], kind: str) -> IssuerKeys:
        iss = claims.get("iss")
        if iss is None:
            raise _fail("missing_claim", "iss")
        if not isinstance(iss, str):
            raise _fail("invalid_claim", "iss must be a string")
        by_kind = self._by_iss.get(iss)
        if by_kind is None:
            raise _fail("unknown_issuer")
        keys = by_kind.get(kind)
        if keys is None:
            raise _fail("wrong_token_kind", f"{next(iter(by_kind))} token used as {kind} token")
        return keys

    def _check_with_pyjwt(self, token: str, key: jwt.PyJWK, alg: str, issuer: IssuerConfig) -> None:
        options: Any = {
            "verify_signature": True,
            "verify_aud": True,
            "verify_iss": True,
            "verify_sub": True,
            "verify_jti": True,
            "strict_aud": False,
            # time is checked below against the injected clock
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "require": list(issuer.required_claims),
            "enforce_minimum_key_length": True,
        }
        try:
            self._jwt.decode_complete(
                token,
                key=key,
                algorithms=[alg],
                options=options,
                audience=list(issuer.audiences),
                issuer=issuer.issuer,
            )
        except jwt.InvalidSignatureError:
            raise _fail("bad_signature") from None
        except jwt.InvalidAlgorithmError:
            raise _fail("disallowed_alg") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _fail("missing_claim", exc.claim) from None
        except jwt.InvalidAudienceError:
            raise _fail("wrong_audience") from None
        except jwt.DecodeError:
            raise _fail("malformed_token") from None
        except jwt.InvalidTokenError:
            raise _fail("invalid_claim") from None
        except jwt.PyJWTError:
            raise _fail("key_alg_mismatch") from None

    def _check_claims(self, claims: dict[str, Any], issuer: IssuerConfig, kid: str) -> Verified:
        exp = _int_claim(claims, "exp")
        nbf = _int_claim(claims, "nbf")
        iat = _int_claim(claims, "iat")
        if exp is None:
            raise _fail("missing_claim", "exp")
        now = self._clock()
        leeway = issuer.leeway_seconds
        if now >= exp + leeway:
            raise _fail("expired")
        if nbf is not None and nbf > now + leeway:
            raise _fail("not_yet_valid")
        if iat is not None and iat > now + leeway:
            raise _fail("issued_in_future")
        id_claim = issuer.device_id_claim if issuer.kind == "device" else "sub"
        subject = claims.get(id_claim)
        if not isinstance(subject, str) or not subject:
            raise _fail("invalid_claim", f"{id_claim} must be a non-empty string")
        return Verified(issuer=issuer, kid=kid, claims=claims, subject=subject, expires_at=exp)
