"""Minted tokens verify with PyJWT against the JWKS we publish; binding, overrides and key
helpers behave as documented."""

from __future__ import annotations

import base64
import hashlib
import json
import string
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from ztproxy.devtools.mint import (
    OMIT,
    alg_for_key,
    generate_signing_key,
    jwks,
    load_private_key,
    mint_token,
    public_jwk,
    x5t_s256,
)
from ztproxy.devtools.pki import DevCA, DevPki, write_private

T0 = 1_795_000_000
ISS, AUD = "https://sso.example", "ztproxy"
ALGS = ["ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"]


def _verify(token: str, jwk_set: dict[str, Any], *, now: int = T0 + 1) -> dict[str, Any]:
    """Verify with PyJWT, picking the key by kid from the set (as the proxy will), with the
    time checks done at the injected `now` (PyJWT itself only reads the wall clock)."""
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWKSet.from_dict(jwk_set)[kid]
    claims = jwt.decode(
        token,
        key=key,
        algorithms=[key.algorithm_name],
        audience=AUD,
        issuer=ISS,
        options={
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "require": ["exp", "iat", "nbf", "sub", "jti"],
        },
    )
    if not claims["nbf"] <= now < claims["exp"]:
        raise jwt.ExpiredSignatureError("outside the validity window at the injected now")
    return claims


@pytest.mark.parametrize("alg", ALGS)
def test_every_algorithm_round_trips_through_its_public_jwk(alg: str) -> None:
    key = generate_signing_key(alg)
    assert alg_for_key(key) == (alg if alg[:2] in ("ES", "Ed") else "RS256")
    jwk = public_jwk(key, "k1", alg)
    assert jwk["kid"] == "k1" and jwk["alg"] == alg and jwk["use"] == "sig"
    assert "d" not in jwk and "p" not in jwk  # public only
    token = mint_token(
        key=key, kid="k1", issuer=ISS, audience=AUD, subject="alice", alg=alg, now=T0
    )
    claims = _verify(token, jwks(jwk))
    assert claims["sub"] == "alice" and claims["iss"] == ISS and claims["aud"] == AUD
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(token, jwks(public_jwk(generate_signing_key(alg), "k1", alg)))


def test_unknown_algorithm_is_refused() -> None:
    for alg in ("HS256", "none", "ES999"):
        with pytest.raises(ValueError):
            generate_signing_key(alg)


def test_standard_claims_and_ttl() -> None:
    key = generate_signing_key()
    token = mint_token(
        key=key, kid="k", issuer=ISS, audience=[AUD, "other"], subject="s", ttl=90, now=T0
    )
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iat"] == claims["nbf"] == T0 and claims["exp"] == T0 + 90
    assert claims["aud"] == [AUD, "other"]
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": "k", "typ": "JWT"}
    jtis = {
        jwt.decode(
            mint_token(key=key, kid="k", issuer=ISS, audience=AUD, subject="s"),
            options={"verify_signature": False},
        )["jti"]
        for _ in range(20)
    }
    assert len(jtis) == 20
    with pytest.raises(jwt.ExpiredSignatureError):
        _verify(token, jwks(public_jwk(key, "k", "ES256")), now=T0 + 90)


def test_bound_token_carries_the_certificate_thumbprint(ca: DevCA) -> None:
    svid = ca.issue_workload("spiffe://corp.example/ns/prod/sa/checkout")
    key = generate_signing_key()
    for bind in (svid.cert, svid.cert_pem, svid.cert.public_bytes(serialization.Encoding.DER)):
        token = mint_token(
            key=key, kid="d", issuer=ISS, audience=AUD, subject="laptop", bind_cert=bind, now=T0
        )
        claims = _verify(token, jwks(public_jwk(key, "d", "ES256")))
        assert claims["cnf"] == {"x5t#S256": x5t_s256(svid.cert)}
    unbound = mint_token(key=key, kid="d", issuer=ISS, audience=AUD, subject="laptop")
    assert "cnf" not in jwt.decode(unbound, options={"verify_signature": False})


def test_claims_merge_last_and_omit_removes() -> None:
    key = generate_signing_key()
    token = mint_token(
        key=key,
        kid="k",
        issuer=ISS,
        audience=AUD,
        subject="s",
        now=T0,
        claims={"exp": "soon", "iss": "evil", "nbf": OMIT, "trust": "high"},
        headers={"kid": "../../etc/passwd", "jku": "https://evil/jwks"},
    )
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] == "soon" and claims["iss"] == "evil" and "nbf" not in claims
    assert claims["trust"] == "high"
    header = jwt.get_unverified_header(token)
    assert header["kid"] == "../../etc/passwd" and header["jku"] == "https://evil/jwks"


def test_x5t_s256_matches_rfc8705_definition(ca: DevCA) -> None:
    cert = ca.issue_server().cert
    der = cert.public_bytes(serialization.Encoding.DER)
    expected = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")
    pem = cert.public_bytes(serialization.Encoding.PEM)
    assert x5t_s256(cert) == x5t_s256(der) == x5t_s256(pem) == x5t_s256(b"\n" + pem) == expected


@settings(max_examples=50)
@given(st.binary(min_size=1, max_size=256).filter(lambda b: b"-----BEGIN" not in b))
def test_x5t_s256_is_43_base64url_chars_without_padding(der: bytes) -> None:
    value = x5t_s256(der)
    assert len(value) == 43
    assert set(value) <= set(string.ascii_letters + string.digits + "-_")


def test_x5t_s256_rejects_malformed_pem() -> None:
    with pytest.raises(ValueError):
        x5t_s256(b"-----BEGIN CERTIFICATE-----\nnot base64\n")


def test_load_private_key_round_trip(tmp_path: Path) -> None:
    key = generate_signing_key("EdDSA")
    path = tmp_path / "k.key"
    write_private(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    assert load_private_key(path).public_key() == key.public_key()


def test_dev_issuer_jwks_files_verify_tokens_from_their_keys(dev_pki: DevPki) -> None:
    for key_path, jwks_path, kid in (
        (dev_pki.user_key, dev_pki.user_jwks, dev_pki.user_kid),
        (dev_pki.device_key, dev_pki.device_jwks, dev_pki.device_kid),
    ):
        jwk_set = json.loads(jwks_path.read_text())
        assert [k["kid"] for k in jwk_set["keys"]] == [kid]
        token = mint_token(
            key=load_private_key(key_path), kid=kid, issuer=ISS, audience=AUD, subject="x", now=T0
        )
        assert _verify(token, jwk_set)["sub"] == "x"
    # the two issuers do not share a key
    user_token = mint_token(
        key=load_private_key(dev_pki.user_key),
        kid=dev_pki.device_kid,
        issuer=ISS,
        audience=AUD,
        subject="x",
        now=T0,
    )
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(user_token, json.loads(dev_pki.device_jwks.read_text()))
