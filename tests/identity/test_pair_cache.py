"""The whole-request credentials memo in front of the per-token cache: it answers only
what the per-token path would answer, and forgets under the same conditions (exp, a
key no longer published, another certificate, another route), never for a refusal."""

from __future__ import annotations

import dataclasses

import pytest
from identity_support import (
    T0,
    FakeClock,
    JwksServer,
    SigningKey,
    ec_key,
    headers,
    issuers_for,
    mint,
    mint_device,
    route,
)

from ztproxy.errors import Unauthenticated
from ztproxy.metrics import Metrics
from ztproxy.model import Binding, PeerIdentity, Requirement

REQ = Requirement.REQUIRED
USER = "/user/jwks"  # the user issuer's JWKS path on the test server


def both(user_token: str, device_token: str) -> object:
    return headers(
        ("Authorization", f"Bearer {user_token}"),
        ("Device-Authorization", f"Bearer {device_token}"),
    )


def hits(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("ztproxy_token_cache_total", {"result": "hit"}) or 0.0


async def test_the_same_request_is_answered_whole_and_counted_per_token(
    make_auth, user_key: SigningKey, device_key: SigningKey, peer: PeerIdentity
) -> None:
    metrics = Metrics()
    auth = await make_auth(metrics=metrics)
    rt = route(REQ, REQ)
    hdrs = both(mint(user_key), mint_device(device_key, peer.x5t_s256))
    first = await auth.authenticate(hdrs, "", rt, peer)
    second = await auth.authenticate(hdrs, "", rt, peer)
    third = await auth.authenticate(hdrs, "", rt, peer)
    assert second is first and third is first  # the per-token path builds a new one
    assert hits(metrics) == 4  # two tokens, two hits each
    assert (
        metrics.registry.get_sample_value(
            "ztproxy_token_verifications_total", {"kind": "device", "result": "ok"}
        )
        == 3
    )


async def test_never_past_the_earliest_exp(
    make_auth,
    jwks_server: JwksServer,
    user_key: SigningKey,
    device_key: SigningKey,
    clock: FakeClock,
    peer: PeerIdentity,
) -> None:
    base = issuers_for(jwks_server.base)
    strict = tuple(dataclasses.replace(i, leeway_seconds=0) for i in base.issuers)
    auth = await make_auth(dataclasses.replace(base, issuers=strict))
    rt = route(REQ, REQ)
    hdrs = both(
        mint(user_key, {"exp": int(T0) + 600}),
        mint_device(device_key, peer.x5t_s256, {"exp": int(T0) + 100}),
    )
    first = await auth.authenticate(hdrs, "", rt, peer)
    clock.advance(99)
    assert await auth.authenticate(hdrs, "", rt, peer) is first
    clock.advance(1)  # the device token's exp: the user token is still good
    with pytest.raises(Unauthenticated) as err:
        await auth.authenticate(hdrs, "", rt, peer)
    assert err.value.reason == "expired"


async def test_a_key_removed_from_the_jwks_ends_it(
    make_auth, jwks_server: JwksServer, user_key: SigningKey, clock: FakeClock, peer: PeerIdentity
) -> None:
    auth = await make_auth()
    rt = route(REQ)
    hdrs = headers(("Authorization", f"Bearer {mint(user_key, {'exp': int(T0) + 7200})}"))
    first = await auth.authenticate(hdrs, "", rt, peer)
    jwks_server.docs[USER] = [ec_key("user-2").jwk(alg="ES256")]
    clock.advance(599)
    assert await auth.authenticate(hdrs, "", rt, peer) is first  # keys still fresh
    clock.advance(2)  # past the JWKS TTL: refreshed without the old key
    with pytest.raises(Unauthenticated) as err:
        await auth.authenticate(hdrs, "", rt, peer)
    assert err.value.reason == "unknown_kid"


async def test_another_certificate_or_route_is_not_answered_from_it(
    make_auth, device_key: SigningKey, peer: PeerIdentity, other_peer: PeerIdentity
) -> None:
    auth = await make_auth()
    relaxed = route(Requirement.NONE, REQ, Binding.RELAXED)
    unbound = headers(("Device-Authorization", f"Bearer {mint_device(device_key, None)}"))
    await auth.authenticate(unbound, "", relaxed, peer)
    await auth.authenticate(unbound, "", relaxed, peer)
    # a reload makes a new route object with the same name and a stricter rule
    strict = dataclasses.replace(relaxed, device_binding=Binding.REQUIRED)
    with pytest.raises(Unauthenticated) as err:
        await auth.authenticate(unbound, "", strict, peer)
    assert err.value.reason == "unbound_device_token"
    bound = headers(("Device-Authorization", f"Bearer {mint_device(device_key, peer.x5t_s256)}"))
    await auth.authenticate(bound, "", strict, peer)
    with pytest.raises(Unauthenticated) as err:
        await auth.authenticate(bound, "", strict, other_peer)
    assert err.value.reason == "cert_binding_mismatch"


async def test_refusals_are_never_remembered(
    make_auth, user_key: SigningKey, peer: PeerIdentity
) -> None:
    auth = await make_auth()
    rt = route(REQ)
    token = mint(user_key)
    twice = headers(("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}"))
    for _ in range(2):
        with pytest.raises(Unauthenticated) as err:
            await auth.authenticate(twice, "", rt, peer)
        assert err.value.reason == "multiple_tokens"
    for _ in range(2):
        with pytest.raises(Unauthenticated) as err:
            await auth.authenticate(headers(), "", rt, peer)
        assert err.value.reason == "missing_token"
    assert auth._pairs == {}


async def test_bounded_and_off_with_the_token_cache(
    make_auth, jwks_server: JwksServer, user_key: SigningKey, peer: PeerIdentity
) -> None:
    base = issuers_for(jwks_server.base)
    small = await make_auth(dataclasses.replace(base, token_cache_size=3))
    off = await make_auth(dataclasses.replace(base, token_cache_size=0))
    rt = route(REQ)
    for i in range(6):
        hdrs = headers(("Authorization", f"Bearer {mint(user_key, {'sub': f'u{i}'})}"))
        await small.authenticate(hdrs, "", rt, peer)
        first = await off.authenticate(hdrs, "", rt, peer)
        assert await off.authenticate(hdrs, "", rt, peer) is not first
    assert len(small._pairs) == 3 and off._pairs == {}
