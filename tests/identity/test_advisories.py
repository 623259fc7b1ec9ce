"""Each known attack on JWT verification, replayed against the real authenticator.

One test per attack, named after it (and the advisory where there is one), in the
manner of pyjwt's tests/test_advisory.py. Every token here is signed for real unless
the attack is precisely the lack of a signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from identity_support import (
    DEVICE_AUD,
    DEVICE_ISS,
    USER_AUD,
    USER_ISS,
    JwksServer,
    SigningKey,
    b64u,
    bearer,
    claims,
    ec_key,
    headers,
    issuers_for,
    mint,
    mint_device,
    route,
    sign_raw,
)

from ztproxy.errors import Unauthenticated
from ztproxy.identity import TokenAuthenticator
from ztproxy.model import Binding, PeerIdentity, Requirement

REQ, NONE = Requirement.REQUIRED, Requirement.NONE


async def rejected(
    auth: TokenAuthenticator,
    token: str,
    peer: PeerIdentity,
    *,
    header: str = "Authorization",
    user: Requirement = REQ,
    device: Requirement = NONE,
    query: str = "",
) -> str:
    with pytest.raises(Unauthenticated) as err:
        await auth.authenticate(bearer(token, header), query, route(user, device), peer)
    assert err.value.status == 401
    assert token not in str(err.value) and token not in err.value.detail
    return err.value.reason


# -- algorithm attacks -------------------------------------------------------------------
@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity, alg: str
) -> None:
    token = sign_raw({"alg": alg, "kid": user_key.kid}, claims(), None)
    assert await rejected(auth, token, peer) == "disallowed_alg"


async def test_hs256_signed_with_the_rsa_public_key_as_secret_cve_2022_29217(
    auth: TokenAuthenticator, rsa_key: SigningKey, peer: PeerIdentity
) -> None:
    """Key confusion: the verifier must not let the token pick HMAC for an RSA key."""
    pem = rsa_key.public_pem()
    for secret in (pem, pem.strip(), json.dumps(rsa_key.jwk()).encode()):
        signing_input = (
            f"{b64u(json.dumps({'alg': 'HS256', 'kid': rsa_key.kid}).encode())}."
            f"{b64u(json.dumps(claims()).encode())}"
        )
        sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert await rejected(auth, f"{signing_input}.{b64u(sig)}", peer) == "disallowed_alg"


async def test_alg_allowed_globally_but_not_for_this_issuer(
    auth: TokenAuthenticator, device_key: SigningKey, peer: PeerIdentity, rsa_key: SigningKey
) -> None:
    """The device issuer allows ES256 only: an RS256 device token is refused."""
    token = mint_device(rsa_key, peer.x5t_s256)
    reason = await rejected(auth, token, peer, header="Device-Authorization", user=NONE, device=REQ)
    assert reason == "disallowed_alg"


async def test_token_alg_does_not_match_the_key(
    auth: TokenAuthenticator, rsa_key: SigningKey, peer: PeerIdentity
) -> None:
    """PS256 with the kid of a key published for RS256 only."""
    token = mint(rsa_key, alg="PS256")
    assert await rejected(auth, token, peer) == "key_alg_mismatch"


# -- kid ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kid",
    [
        "../../../../../../dev/null",
        "/etc/passwd",
        "..%2F..%2Fetc%2Fpasswd",
        "file:///dev/null",
        "http://127.0.0.1:1/jwks",
    ],
)
async def test_kid_path_traversal(
    auth: TokenAuthenticator,
    jwks_server: JwksServer,
    user_key: SigningKey,
    peer: PeerIdentity,
    kid: str,
) -> None:
    token = mint(user_key, headers={"kid": kid})
    assert await rejected(auth, token, peer) == "unknown_kid"
    # the kid is only ever a dictionary key: the server saw the fixed JWKS path only
    assert set(jwks_server.requests) <= {"/user/jwks", "/device/jwks"}


@pytest.mark.parametrize(
    "kid",
    ["x' OR '1'='1", "user-1' --", "user-1\x00", "user-1\r\nX: y", "$(id)", "user-1 ", "USER-1"],
)
async def test_kid_injection(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity, kid: str
) -> None:
    token = mint(user_key, headers={"kid": kid})
    assert await rejected(auth, token, peer) == "unknown_kid"


@pytest.mark.parametrize("kid", [None, 1, ["user-1"], {"$ne": ""}, "", "k" * 300])
async def test_kid_of_the_wrong_type_or_size(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity, kid: object
) -> None:
    token = sign_raw({"alg": "ES256", "kid": kid}, claims(), user_key)
    assert await rejected(auth, token, peer) in {"malformed_token", "unknown_kid"}


async def test_missing_kid(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity
) -> None:
    token = sign_raw({"alg": "ES256"}, claims(), user_key)
    assert await rejected(auth, token, peer) == "unknown_kid"


# -- header injection: keys or key URLs chosen by the sender -------------------------------
@pytest.fixture
async def attacker_server() -> JwksServer:
    server = JwksServer()
    await server.start()
    yield server  # type: ignore[misc]
    await server.stop()


async def _attacker_token(attacker: SigningKey, extra_header: dict[str, object]) -> str:
    return mint(attacker, headers=extra_header)


async def test_jku_header_injection(
    auth: TokenAuthenticator, attacker_server: JwksServer, user_key: SigningKey, peer: PeerIdentity
) -> None:
    attacker = ec_key(user_key.kid)
    attacker_server.docs["/jwks"] = [attacker.jwk(alg="ES256")]
    token = mint(attacker, headers={"jku": f"{attacker_server.base}/jwks"})
    assert await rejected(auth, token, peer) == "forbidden_header"
    assert attacker_server.fetches() == 0


async def test_x5u_header_injection(
    auth: TokenAuthenticator, attacker_server: JwksServer, user_key: SigningKey, peer: PeerIdentity
) -> None:
    attacker = ec_key(user_key.kid)
    token = mint(attacker, headers={"x5u": f"{attacker_server.base}/cert.pem"})
    assert await rejected(auth, token, peer) == "forbidden_header"
    assert attacker_server.fetches() == 0


async def test_jwk_header_injection_cve_2018_0114(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity
) -> None:
    attacker = ec_key(user_key.kid)
    token = mint(attacker, headers={"jwk": attacker.jwk(alg="ES256")})
    assert await rejected(auth, token, peer) == "forbidden_header"


async def test_x5c_header_injection(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity
) -> None:
    attacker = ec_key(user_key.kid)
    fake_chain = [base64.b64encode(b"0\x82\x01\x00 not really a certificate").decode()]
    token = mint(attacker, headers={"x5c": fake_chain})
    assert await rejected(auth, token, peer) == "forbidden_header"


async def test_forbidden_header_refused_even_with_a_valid_signature(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity
) -> None:
    token = mint(user_key, headers={"jku": "https://idp.example/jwks"})
    assert await rejected(auth, token, peer) == "forbidden_header"


@pytest.mark.parametrize("crit", [["exp"], ["b64"], ["http://example.com/ext"], [], "b64"])
async def test_unknown_crit(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity, crit: object
) -> None:
    token = mint(user_key, headers={"crit": crit, "http://example.com/ext": True})
    assert await rejected(auth, token, peer) == "unsupported_crit"


async def test_unencoded_payload_b64_false_rfc_7797(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity
) -> None:
    token = sign_raw({"alg": "ES256", "kid": user_key.kid, "b64": False}, claims(), user_key)
    assert await rejected(auth, token, peer) == "forbidden_header"


# -- time ----------------------------------------------------------------------------------
async def test_expired(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity, clock
) -> None:
    token = mint(user_key, {"exp": int(clock.now) - 31})
    assert await rejected(auth, token, peer) == "expired"


async def test_expired_within_leeway_is_accepted(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity, clock
) -> None:
    token = mint(user_key, {"exp": int(clock.now) - 29})
    creds = await auth.authenticate(bearer(token), "", route(), peer)
    assert creds.user is not None


async def test_nbf_in_the_future(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity, clock
) -> None:
    token = mint(user_key, {"nbf": int(clock.now) + 120})
    assert await rejected(auth, token, peer) == "not_yet_valid"


async def test_iat_far_in_the_future(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity, clock
) -> None:
    token = mint(user_key, {"iat": int(clock.now) + 86400 * 365, "exp": int(clock.now) + 10**9})
    assert await rejected(auth, token, peer) == "issued_in_future"


async def test_missing_exp(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity
) -> None:
    token = mint(user_key, drop=("exp",))
    assert await rejected(auth, token, peer) == "missing_claim"


@pytest.mark.parametrize("exp", ["1900000000", 1900000000.5, True, None, [1900000000], {"$gt": 0}])
async def test_exp_as_a_string_or_other_non_integer(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity, exp: object
) -> None:
    token = mint(user_key, {"exp": exp})
    assert await rejected(auth, token, peer) in {"invalid_claim", "missing_claim"}


@pytest.mark.parametrize("claim", ["nbf", "iat"])
async def test_nbf_iat_as_strings(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity, claim: str
) -> None:
    token = mint(user_key, {claim: "0"})
    assert await rejected(auth, token, peer) == "invalid_claim"


# -- claims ----------------------------------------------------------------------------------
async def test_duplicate_claims(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity
) -> None:
    """PyJWT alone keeps the last `sub`: two parsers could see two users."""
    body = json.dumps(claims())[:-1] + ', "sub": "admin"}'
    token = sign_raw({"alg": "ES256", "kid": user_key.kid}, body.encode(), user_key)
    assert await rejected(auth, token, peer) == "duplicate_claims"


async def test_duplicate_header_members(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity
) -> None:
    header = b'{"alg":"ES256","kid":"user-1","alg":"HS256"}'
    token = sign_raw(header, claims(), user_key)
    assert await rejected(auth, token, peer) == "duplicate_claims"


async def test_nested_duplicate_members(
    auth: TokenAuthenticator, device_key: SigningKey, peer: PeerIdentity
) -> None:
    body = (
        json.dumps(claims(iss=DEVICE_ISS, aud=DEVICE_AUD, device_id="d"))[:-1]
        + ', "cnf": {"x5t#S256": "a", "x5t#S256": "'
        + peer.x5t_s256
        + '"}}'
    )
    token = sign_raw({"alg": "ES256", "kid": device_key.kid}, body.encode(), device_key)
    reason = await rejected(auth, token, peer, header="Device-Authorization", user=NONE, device=REQ)
    assert reason == "duplicate_claims"


@pytest.mark.parametrize(
    "iss",
    [
        USER_ISS + ".evil.example",
        USER_ISS + "/",
        USER_ISS + " ",
        "https://idp.exampl",
        "https://idp",
        "evil" + USER_ISS,
        "https://evil.example/" + USER_ISS,
        USER_ISS.upper(),
    ],
)
async def test_iss_prefix_and_suffix_matches(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity, iss: str
) -> None:
    token = mint(user_key, iss=iss)
    assert await rejected(auth, token, peer) == "unknown_issuer"


@pytest.mark.parametrize("iss", [[USER_ISS], {"iss": USER_ISS}, 1])
async def test_iss_not_a_string_cve_2024_53861(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity, iss: object
) -> None:
    """PyJWT 2.10.0 matched `iss` partially when it was a sequence."""
    token = sign_raw({"alg": "ES256", "kid": user_key.kid}, claims(iss=iss), user_key)
    assert await rejected(auth, token, peer) == "invalid_claim"


@pytest.mark.parametrize("aud", ["ztprox", "ztproxy2", "ZTPROXY", "other", ["other"], [], "", [1]])
async def test_wrong_aud(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity, aud: object
) -> None:
    token = mint(user_key, aud=aud)
    assert await rejected(auth, token, peer) in {"wrong_audience", "missing_claim"}


async def test_aud_list_containing_ours_is_accepted(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity
) -> None:
    token = mint(user_key, aud=["other", USER_AUD])
    assert (await auth.authenticate(bearer(token), "", route(), peer)).user is not None


# -- signature -----------------------------------------------------------------------------
async def test_signature_stripped(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity
) -> None:
    token = mint(user_key)
    stripped = token.rsplit(".", 1)[0] + "."
    assert await rejected(auth, stripped, peer) == "bad_signature"
    assert await rejected(auth, token.rsplit(".", 1)[0], peer) == "malformed_token"


async def test_es256_all_zero_signature_cve_2022_21449(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity
) -> None:
    """'Psychic signatures': r = s = 0 verified as valid in Java 15-18."""
    head = mint(user_key).rsplit(".", 1)[0]
    assert await rejected(auth, f"{head}.{b64u(bytes(64))}", peer) == "bad_signature"
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    r_s_n = n.to_bytes(32, "big") * 2
    assert await rejected(auth, f"{head}.{b64u(r_s_n)}", peer) == "bad_signature"


async def test_signature_of_another_token(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity
) -> None:
    a = mint(user_key, {"sub": "alice"})
    b = mint(user_key, {"sub": "admin"})
    spliced = b.rsplit(".", 1)[0] + "." + a.rsplit(".", 1)[1]
    assert await rejected(auth, spliced, peer) == "bad_signature"


async def test_non_canonical_base64_signature(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity
) -> None:
    """An ES256 signature's last base64url char carries 4 unused bits: flipping them
    must not give a second valid spelling of the same token."""
    token = mint(user_key)
    head, sig = token.rsplit(".", 1)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    idx = alphabet.index(sig[-1])
    twin = alphabet[idx ^ 1]
    assert await rejected(auth, f"{head}.{sig[:-1]}{twin}", peer) == "malformed_token"
    assert await rejected(auth, f"{head}.{sig}==", peer) == "malformed_token"


async def test_signed_by_an_unpublished_key_with_a_published_kid(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity
) -> None:
    forger = ec_key(user_key.kid)
    assert await rejected(auth, mint(forger), peer) == "bad_signature"


# -- device binding and token kinds ----------------------------------------------------------
async def test_device_token_bound_to_another_certificate(
    auth: TokenAuthenticator, device_key: SigningKey, peer: PeerIdentity, other_peer: PeerIdentity
) -> None:
    token = mint_device(device_key, other_peer.x5t_s256)
    for binding in (Binding.REQUIRED, Binding.RELAXED):
        with pytest.raises(Unauthenticated) as err:
            await auth.authenticate(
                bearer(token, "Device-Authorization"), "", route(NONE, REQ, binding), peer
            )
        assert err.value.reason == "cert_binding_mismatch"


async def test_unbound_device_token(
    auth: TokenAuthenticator, device_key: SigningKey, peer: PeerIdentity
) -> None:
    token = mint_device(device_key, None)
    reason = await rejected(auth, token, peer, header="Device-Authorization", user=NONE, device=REQ)
    assert reason == "unbound_device_token"


async def test_user_token_bound_to_another_certificate(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity, other_peer: PeerIdentity
) -> None:
    token = mint(user_key, {"cnf": {"x5t#S256": other_peer.x5t_s256}})
    assert await rejected(auth, token, peer) == "cert_binding_mismatch"
    bound = mint(user_key, {"cnf": {"x5t#S256": peer.x5t_s256}})
    creds = await auth.authenticate(bearer(bound), "", route(), peer)
    assert creds.user is not None and creds.user.bound_to_client_cert


async def test_dpop_bound_token_is_not_treated_as_bearer(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity
) -> None:
    token = mint(user_key, {"cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}})
    assert await rejected(auth, token, peer) == "unsupported_binding"


async def test_device_token_used_as_user_token(
    auth: TokenAuthenticator, device_key: SigningKey, peer: PeerIdentity
) -> None:
    token = mint_device(device_key, peer.x5t_s256)
    assert await rejected(auth, token, peer) == "wrong_token_kind"


async def test_user_token_used_as_device_token(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity
) -> None:
    token = mint(user_key, {"cnf": {"x5t#S256": peer.x5t_s256}})
    reason = await rejected(auth, token, peer, header="Device-Authorization", user=NONE, device=REQ)
    assert reason == "wrong_token_kind"


async def test_same_iss_for_both_kinds_kept_apart_by_audience(
    make_auth, jwks_server: JwksServer, user_key: SigningKey, peer: PeerIdentity
) -> None:
    import dataclasses

    base = issuers_for(jwks_server.base)
    device = dataclasses.replace(
        base.issuers[1], issuer=USER_ISS, jwks_uri=f"{jwks_server.base}/user/jwks"
    )
    auth = await make_auth(dataclasses.replace(base, issuers=(base.issuers[0], device)))
    user_token = mint(user_key, {"cnf": {"x5t#S256": peer.x5t_s256}, "device_id": "d"})
    reason = await rejected(
        auth, user_token, peer, header="Device-Authorization", user=NONE, device=REQ
    )
    assert reason == "wrong_audience"


# -- transport -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "query",
    [
        "access_token={t}",
        "ACCESS_TOKEN={t}",
        "id_token={t}",
        "next=%2Fhome&jwt={t}",
        "q=Bearer%20{t}",
        "{t}",
        "x={t_enc}",
        "access_token=",
        "a=1&access_token=opaque",
    ],
)
async def test_token_in_the_query_string(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity, query: str
) -> None:
    token = mint(user_key)
    q = query.format(t=token, t_enc=token.replace(".", "%2E"))
    for rt in (route(REQ, NONE), route(NONE, NONE)):  # whatever the route says
        with pytest.raises(Unauthenticated) as err:
            await auth.authenticate(bearer(token), q, rt, peer)
        assert err.value.reason == "token_in_query"


async def test_token_only_in_the_query_string(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity
) -> None:
    with pytest.raises(Unauthenticated) as err:
        await auth.authenticate(headers(), f"access_token={mint(user_key)}", route(), peer)
    assert err.value.reason == "token_in_query"


async def test_token_too_long(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity
) -> None:
    token = mint(user_key, {"pad": "x" * 20000})
    assert await rejected(auth, token, peer) == "malformed_token"
