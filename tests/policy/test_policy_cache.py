"""The decision cache through the decider: only identical requests share an answer."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from policy_support import TD, device, make_input, user

from ztproxy.config.policy import PolicyConfig
from ztproxy.errors import ServiceUnavailable
from ztproxy.model import Decision
from ztproxy.policy import PolicyDecider, build_decider
from ztproxy.policy.cache import DecisionCache

PATH = "ztproxy/authz/decision"


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def decider(policies_dir: Path, clock: FakeClock) -> AsyncIterator[PolicyDecider]:
    d = build_decider(PolicyConfig(policy_dirs=(str(policies_dir),), watch=False), clock=clock)
    assert isinstance(d, PolicyDecider)
    await d.start()
    yield d
    await d.close()


VARIANTS = {
    "path": {"path": "/admin"},
    "method": {"method": "DELETE"},
    "query": {"query": {"all": ("1",)}},
    "user": {"the_user": user(("viewer",), subject="eve")},
    "no_user": {"with_user": False},
    "device": {"the_device": device(trust_level=1, device_id="old-pc")},
    "no_device": {"with_device": False},
    "source": {"source": f"{TD}/dev/sa/intruder"},
    "destination": {"service": "reports"},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_other_request_never_gets_the_cached_allow(
    decider: PolicyDecider, variant: str
) -> None:
    first = await decider.decide(PATH, make_input())
    assert first.allowed and not first.cached
    again = await decider.decide(PATH, make_input(request_id="other"))
    assert again.allowed and again.cached  # same request, new id: from the cache
    other = await decider.decide(PATH, make_input(**VARIANTS[variant]))
    if variant == "query":
        # regorus's AST shows the shipped policy reads only static input paths, none
        # under request.query: the key is the values at those paths, so this request
        # shares the entry (tests/policy/test_cache_soundness.py proves the key sound)
        assert other.cached and other.allowed
    else:
        assert not other.cached and not other.allowed


async def test_other_decision_path_is_not_served_from_cache(decider: PolicyDecider) -> None:
    assert (await decider.decide(PATH, make_input())).allowed
    other = await decider.decide("ztproxy/authz/deny", make_input())
    assert not other.cached and other.reason == "policy_result_invalid"


async def test_ttl_expiry(decider: PolicyDecider, clock: FakeClock) -> None:
    await decider.decide(PATH, make_input())
    clock.now += 0.999
    assert (await decider.decide(PATH, make_input())).cached
    clock.now += 0.002
    assert not (await decider.decide(PATH, make_input())).cached


async def test_errors_and_invalid_results_never_cached(
    policies_dir: Path, clock: FakeClock
) -> None:
    (policies_dir / "ztproxy" / "bad.rego").write_text(
        "package ztproxy.bad\nimport rego.v1\n"
        'decision := 1 % input.zero if input.mode == "error"\n'
        'decision := "yes" if input.mode == "invalid"\n'
    )
    d = build_decider(PolicyConfig(policy_dirs=(str(policies_dir),), watch=False), clock=clock)
    await d.start()
    try:
        for _ in range(2):
            with pytest.raises(ServiceUnavailable) as info:
                await d.decide("ztproxy/bad/decision", {"mode": "error", "zero": 0})
            assert info.value.reason == "policy_engine_error"
            got = await d.decide("ztproxy/bad/decision", {"mode": "invalid"})
            assert got.reason == "policy_result_invalid" and not got.cached
        assert d.stats()["policy_cache_entries"] == 0
    finally:
        await d.close()


async def test_reload_clears_the_cache(decider: PolicyDecider) -> None:
    await decider.decide(PATH, make_input())
    assert decider.stats()["policy_cache_entries"] == 1
    assert await decider.reload()
    assert decider.stats()["policy_cache_entries"] == 0
    assert not (await decider.decide(PATH, make_input())).cached


async def test_cache_disabled_with_zero_ttl(policies_dir: Path) -> None:
    d = build_decider(PolicyConfig(policy_dirs=(str(policies_dir),), watch=False, cache_ttl_ms=0))
    await d.start()
    try:
        await d.decide(PATH, make_input())
        assert not (await d.decide(PATH, make_input())).cached
    finally:
        await d.close()


def test_cache_is_bounded_lru() -> None:
    now = [0.0]
    cache = DecisionCache(10.0, 2, lambda: now[0])
    d = Decision(allowed=True, reason="policy_allow")
    cache.put("a", d)
    cache.put("b", d)
    stored = cache.get("a")  # a is now most recent
    assert stored == dataclasses.replace(d, cached=True)
    cache.put("c", d)
    assert len(cache) == 2 and cache.get("b") is None and cache.get("a") is stored
