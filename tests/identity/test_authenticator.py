"""TokenAuthenticator end to end over a real JWKS server: requirements per route,
principals, metrics, readiness, lifecycle."""

from __future__ import annotations

import json

import pytest
from identity_support import (
    DEVICE_ISS,
    USER_ISS,
    FakeClock,
    JwksServer,
    SigningKey,
    bearer,
    headers,
    mint,
    mint_device,
    route,
)

from ztproxy.errors import Unauthenticated
from ztproxy.identity import TokenAuthenticator
from ztproxy.metrics import Metrics
from ztproxy.model import Binding, PeerIdentity, Requirement

REQ, OPT, NONE = Requirement.REQUIRED, Requirement.OPTIONAL, Requirement.NONE


async def test_user_and_device_tokens_give_principals(
    auth: TokenAuthenticator, user_key: SigningKey, device_key: SigningKey, peer: PeerIdentity
) -> None:
    user = mint(user_key, {"email": "alice@example.com", "groups": ["eng"]})
    device = mint_device(device_key, peer.x5t_s256)
    hdrs = headers(
        ("Authorization", f"Bearer {user}"), ("Device-Authorization", f"bearer {device}")
    )
    creds = await auth.authenticate(hdrs, "limit=10", route(REQ, REQ), peer)
    assert creds.user is not None and creds.device is not None
    assert (creds.user.kind, creds.user.issuer, creds.user.subject) == ("user", USER_ISS, "alice")
    assert creds.user.issuer_name == "corp-idp"
    assert creds.user.claims["groups"] == ["eng"]
    assert creds.device.kind == "device" and creds.device.issuer == DEVICE_ISS
    assert creds.device.device_id == "dev-42"
    assert creds.device.bound_to_client_cert is True
    assert creds.device.claims["trust_level"] == "high"
    assert creds.user.expires_at == creds.user.claims["exp"]
    # the principal never carries the token itself
    for principal, token in ((creds.user, user), (creds.device, device)):
        text = json.dumps(dict(principal.claims)) + repr(principal)
        assert token not in text and token.split(".")[2] not in text
        assert len(principal.token_sha256) == 64


async def test_rsa_token_is_accepted(
    auth: TokenAuthenticator, rsa_key: SigningKey, peer: PeerIdentity
) -> None:
    creds = await auth.authenticate(bearer(mint(rsa_key)), "", route(), peer)
    assert creds.user is not None and creds.user.subject == "alice"


async def test_required_token_missing(auth: TokenAuthenticator, peer: PeerIdentity) -> None:
    with pytest.raises(Unauthenticated) as err:
        await auth.authenticate(headers(), "", route(REQ, NONE), peer)
    assert err.value.reason == "missing_token" and err.value.status == 401


async def test_required_device_token_missing(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity
) -> None:
    with pytest.raises(Unauthenticated) as err:
        await auth.authenticate(bearer(mint(user_key)), "", route(REQ, REQ), peer)
    assert err.value.reason == "missing_token"


async def test_optional_absent_is_none(auth: TokenAuthenticator, peer: PeerIdentity) -> None:
    creds = await auth.authenticate(headers(), "", route(OPT, OPT), peer)
    assert creds.user is None and creds.device is None


async def test_optional_sent_but_invalid_is_still_401(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity
) -> None:
    token = mint(user_key, {"exp": 1})
    with pytest.raises(Unauthenticated) as err:
        await auth.authenticate(bearer(token), "", route(OPT, NONE), peer)
    assert err.value.reason == "expired"


async def test_none_never_looks_at_the_header(auth: TokenAuthenticator, peer: PeerIdentity) -> None:
    hdrs = headers(("Authorization", "Basic Zm9vOmJhcg=="), ("Authorization", "x"))
    creds = await auth.authenticate(hdrs, "", route(NONE, NONE), peer)
    assert creds.user is None and creds.device is None


@pytest.mark.parametrize(
    "value",
    [
        "Basic Zm9vOmJhcg==",
        "Bearer",
        "Bearer ",
        "Bearer a b",
        "Bearer tok\u00e9n",
        "eyJhbGciOi.x.y",
    ],
)
async def test_malformed_authorization(
    auth: TokenAuthenticator, peer: PeerIdentity, value: str
) -> None:
    with pytest.raises(Unauthenticated) as err:
        await auth.authenticate(headers(("Authorization", value)), "", route(), peer)
    assert err.value.reason == "malformed_token"


async def test_two_authorization_headers(
    auth: TokenAuthenticator, user_key: SigningKey, peer: PeerIdentity
) -> None:
    token = mint(user_key)
    hdrs = headers(("Authorization", f"Bearer {token}"), ("authorization", f"Bearer {token}"))
    with pytest.raises(Unauthenticated) as err:
        await auth.authenticate(hdrs, "", route(), peer)
    assert err.value.reason == "multiple_tokens"


async def test_relaxed_binding_accepts_unbound_device(
    auth: TokenAuthenticator, user_key: SigningKey, device_key: SigningKey, peer: PeerIdentity
) -> None:
    hdrs = headers(
        ("Authorization", f"Bearer {mint(user_key)}"),
        ("Device-Authorization", f"Bearer {mint_device(device_key, None)}"),
    )
    creds = await auth.authenticate(hdrs, "", route(REQ, REQ, Binding.RELAXED), peer)
    assert creds.device is not None and creds.device.bound_to_client_cert is False
    with pytest.raises(Unauthenticated) as err:
        await auth.authenticate(hdrs, "", route(REQ, REQ, Binding.REQUIRED), peer)
    assert err.value.reason == "unbound_device_token"


async def test_configured_device_header(
    make_auth, jwks_server: JwksServer, device_key: SigningKey, peer: PeerIdentity
) -> None:
    from identity_support import issuers_for

    auth = await make_auth(issuers_for(jwks_server.base, device_header="x-device-token"))
    assert auth.credential_header_names() == {"authorization", "cookie", "x-device-token"}
    token = mint_device(device_key, peer.x5t_s256)
    creds = await auth.authenticate(bearer(token, "X-Device-Token"), "", route(NONE, REQ), peer)
    assert creds.device is not None
    with pytest.raises(Unauthenticated) as err:  # the default header is not read any more
        await auth.authenticate(bearer(token, "Device-Authorization"), "", route(NONE, REQ), peer)
    assert err.value.reason == "missing_token"


async def test_metrics_count_results(make_auth, user_key: SigningKey, peer: PeerIdentity) -> None:
    metrics = Metrics()
    auth = await make_auth(metrics=metrics)
    token = mint(user_key)
    await auth.authenticate(bearer(token), "", route(), peer)
    await auth.authenticate(bearer(token), "", route(), peer)
    with pytest.raises(Unauthenticated):
        await auth.authenticate(headers(), "", route(), peer)
    sample = metrics.registry.get_sample_value
    assert sample("ztproxy_token_verifications_total", {"kind": "user", "result": "ok"}) == 2
    assert (
        sample("ztproxy_token_verifications_total", {"kind": "user", "result": "missing_token"})
        == 1
    )
    assert sample("ztproxy_token_cache_total", {"result": "hit"}) == 1
    assert sample("ztproxy_token_cache_total", {"result": "miss"}) == 1
    assert sample("ztproxy_jwks_fetches_total", {"issuer": "corp-idp", "result": "ok"}) == 1
    assert sample("ztproxy_jwks_age_seconds", {"issuer": "corp-idp"}) == 0.0
    stats = auth.stats()
    assert stats["token_cache_hits"] == 1 and stats["token_cache_entries"] == 1
    assert stats["jwks_fetches"] == 2


async def test_ready_after_start_and_closes_cleanly(make_auth, clock: FakeClock) -> None:
    auth = await make_auth(start=False)
    assert auth.readiness() == {"jwks:corp-idp": False, "jwks:device-trust": False}
    await auth.start()
    assert auth.readiness() == {"jwks:corp-idp": True, "jwks:device-trust": True}
    await auth.close()
    await auth.close()  # idempotent


async def test_no_issuers_is_valid(peer: PeerIdentity) -> None:
    from ztproxy.config.identity import IdentityConfig

    auth = TokenAuthenticator(IdentityConfig())
    await auth.start()
    try:
        assert auth.readiness() == {}
        creds = await auth.authenticate(headers(), "", route(NONE, NONE), peer)
        assert creds.user is None and creds.device is None
        with pytest.raises(Unauthenticated) as err:
            await auth.authenticate(bearer("a.b.c"), "", route(REQ, NONE), peer)
        assert err.value.reason == "malformed_token"
    finally:
        await auth.close()
