"""The verified-token cache: bounded, keyed by token and client certificate, never
outliving a token's exp, and never skipping the per-route binding check."""

from __future__ import annotations

import dataclasses

import pytest
from identity_support import (
    T0,
    FakeClock,
    SigningKey,
    bearer,
    issuers_for,
    mint,
    mint_device,
    route,
)

from ztproxy.errors import Unauthenticated
from ztproxy.identity.cache import CacheEntry, TokenCache
from ztproxy.metrics import Metrics
from ztproxy.model import Binding, PeerIdentity, Principal, Requirement

REQ, NONE = Requirement.REQUIRED, Requirement.NONE


def hits(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("ztproxy_token_cache_total", {"result": "hit"}) or 0.0


async def test_second_use_is_a_hit(make_auth, user_key: SigningKey, peer: PeerIdentity) -> None:
    metrics = Metrics()
    auth = await make_auth(metrics=metrics)
    token = mint(user_key)
    first = await auth.authenticate(bearer(token), "", route(), peer)
    second = await auth.authenticate(bearer(token), "", route(), peer)
    assert hits(metrics) == 1 and first.user == second.user


async def test_entry_never_outlives_exp(
    make_auth, jwks_server, user_key: SigningKey, clock: FakeClock, peer: PeerIdentity
) -> None:
    """With leeway 0 the cache is the only thing that could still accept the token."""
    base = issuers_for(jwks_server.base)
    user = dataclasses.replace(base.issuers[0], leeway_seconds=0)
    metrics = Metrics()
    auth = await make_auth(dataclasses.replace(base, issuers=(user,)), metrics=metrics)
    token = mint(user_key, {"exp": int(T0) + 100})
    await auth.authenticate(bearer(token), "", route(), peer)
    clock.advance(99)
    await auth.authenticate(bearer(token), "", route(), peer)
    assert hits(metrics) == 1
    clock.advance(1)
    with pytest.raises(Unauthenticated) as err:
        await auth.authenticate(bearer(token), "", route(), peer)
    assert err.value.reason == "expired" and hits(metrics) == 1


async def test_keyed_by_client_certificate(
    make_auth, device_key: SigningKey, peer: PeerIdentity, other_peer: PeerIdentity
) -> None:
    """A device token cached for its own certificate is refused for another one."""
    auth = await make_auth()
    token = mint_device(device_key, peer.x5t_s256)
    rt = route(NONE, REQ)
    await auth.authenticate(bearer(token, "Device-Authorization"), "", rt, peer)
    with pytest.raises(Unauthenticated) as err:
        await auth.authenticate(bearer(token, "Device-Authorization"), "", rt, other_peer)
    assert err.value.reason == "cert_binding_mismatch"


async def test_binding_rule_applies_to_hits(
    make_auth, device_key: SigningKey, peer: PeerIdentity
) -> None:
    auth = await make_auth()
    token = mint_device(device_key, None)
    hdrs = bearer(token, "Device-Authorization")
    await auth.authenticate(hdrs, "", route(NONE, REQ, Binding.RELAXED), peer)
    with pytest.raises(Unauthenticated) as err:
        await auth.authenticate(hdrs, "", route(NONE, REQ, Binding.REQUIRED), peer)
    assert err.value.reason == "unbound_device_token"


async def test_kind_is_part_of_the_key(make_auth, user_key: SigningKey, peer: PeerIdentity) -> None:
    auth = await make_auth()
    token = mint(user_key, {"cnf": {"x5t#S256": peer.x5t_s256}})
    await auth.authenticate(bearer(token), "", route(), peer)
    with pytest.raises(Unauthenticated) as err:
        await auth.authenticate(bearer(token, "Device-Authorization"), "", route(NONE, REQ), peer)
    assert err.value.reason == "wrong_token_kind"


def _principal(exp: int, sub: str = "a") -> Principal:
    return Principal(
        kind="user", issuer="i", subject=sub, claims={}, token_sha256="0" * 64, expires_at=exp
    )


def test_bounded_lru() -> None:
    clock = FakeClock()
    cache = TokenCache(3, clock)
    for i in range(5):
        cache.put(("user", "t", bytes([i])), CacheEntry(_principal(int(T0) + 60), "i", "k"))
    assert len(cache) == 3
    assert cache.get(("user", "t", bytes([0]))) is None
    assert cache.get(("user", "t", bytes([2]))) is not None
    cache.put(("user", "t", bytes([9])), CacheEntry(_principal(int(T0) + 60), "i", "k"))
    assert cache.get(("user", "t", bytes([2]))) is not None  # recently used: kept
    assert cache.get(("user", "t", bytes([3]))) is None


def test_expired_entries_are_neither_stored_nor_returned() -> None:
    clock = FakeClock()
    cache = TokenCache(10, clock)
    cache.put(("user", "t", b"old"), CacheEntry(_principal(int(T0)), "i", "k"))
    assert len(cache) == 0
    cache.put(("user", "t", b"new"), CacheEntry(_principal(int(T0) + 5), "i", "k"))
    clock.advance(5)
    assert cache.get(("user", "t", b"new")) is None and len(cache) == 0


def test_size_zero_disables_the_cache() -> None:
    cache = TokenCache(0, FakeClock())
    cache.put(("user", "t", b"x"), CacheEntry(_principal(int(T0) + 60), "i", "k"))
    assert len(cache) == 0
