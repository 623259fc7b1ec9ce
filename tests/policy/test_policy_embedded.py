"""The embedded engine: loading, revision, evaluation errors, reload and file watching."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from policy_support import make_input

from ztproxy.config.policy import PolicyConfig
from ztproxy.errors import ConfigError, ServiceUnavailable
from ztproxy.policy import build_decider
from ztproxy.policy.embedded import EmbeddedEngine

PATH = "ztproxy/authz/decision"
AUTHZ = Path("ztproxy") / "authz.rego"


def _cfg(root: Path, **kw: object) -> PolicyConfig:
    return PolicyConfig(policy_dirs=(str(root),), watch=False, cache_ttl_ms=0, **kw)  # type: ignore[arg-type]


async def test_tests_are_not_served_and_data_sits_at_its_directory(policies_dir: Path) -> None:
    engine = EmbeddedEngine([str(policies_dir)])
    await engine.start()
    assert not (await engine.evaluate("ztproxy/authz_test/test_allow_sub_path", {})).defined
    seg = await engine.evaluate("ztproxy/segmentation/trust_domain", {})
    assert seg.value == "corp.example"
    await engine.close()


async def test_revision_is_deterministic_and_follows_content(policies_dir: Path) -> None:
    a, b = EmbeddedEngine([str(policies_dir)]), EmbeddedEngine([str(policies_dir)])
    await a.start()
    await b.start()
    assert a.revision == b.revision and len(a.revision) == 64
    (policies_dir / "ztproxy" / "authz_test.rego").write_text("package x\n")  # not served
    data = policies_dir / "ztproxy" / "segmentation" / "data.json"
    data.write_text(data.read_text().replace("corp.example", "corp2.example"))
    assert await a.reload()
    assert a.revision != b.revision
    await a.close()  # regorus objects must be dropped on this thread, not by a late GC
    await b.close()


async def test_policy_error_at_evaluation_is_503(policies_dir: Path) -> None:
    (policies_dir / "ztproxy" / "boom.rego").write_text(
        "package ztproxy.boom\nimport rego.v1\ndecision := 10 % count(input.request.query)\n"
    )
    d = build_decider(_cfg(policies_dir))
    await d.start()
    try:
        with pytest.raises(ServiceUnavailable) as info:
            await d.decide("ztproxy/boom/decision", make_input())
        assert info.value.reason == "policy_engine_error"
        assert "modulo by zero" in info.value.detail
        assert "Stack backtrace" not in info.value.detail
    finally:
        await d.close()


async def test_null_decision_is_told_apart_from_undefined(policies_dir: Path) -> None:
    (policies_dir / "ztproxy" / "nul.rego").write_text(
        "package ztproxy.nul\nimport rego.v1\ndecision := null if input.x\n"
    )
    engine = EmbeddedEngine([str(policies_dir)])
    await engine.start()
    defined = await engine.evaluate("ztproxy/nul/decision", {"x": True})
    undefined = await engine.evaluate("ztproxy/nul/decision", {"x": False})
    assert (defined.defined, defined.value) == (True, None)
    assert undefined.defined is False
    await engine.close()


async def test_failed_reload_keeps_last_good_policy(policies_dir: Path) -> None:
    d = build_decider(_cfg(policies_dir))
    await d.start()
    try:
        good = d.revision
        (policies_dir / AUTHZ).write_text("package ztproxy.authz\ndecision := \n")
        assert await d.reload() is False
        assert d.revision == good
        assert (await d.decide(PATH, make_input())).allowed
        assert d.stats()["policy_reloads_failed"] == 1
    finally:
        await d.close()


async def test_unsafe_variable_fails_the_load_not_the_requests(policies_dir: Path) -> None:
    d = build_decider(_cfg(policies_dir))
    await d.start()
    try:
        (policies_dir / "ztproxy" / "unsafe.rego").write_text(
            "package ztproxy.unsafe\nimport rego.v1\nx := y if true\n"
        )
        assert await d.reload() is False
    finally:
        await d.close()


async def test_broken_policy_at_start_is_a_config_error(policies_dir: Path) -> None:
    (policies_dir / AUTHZ).write_text("package ztproxy.authz\nallow {\n")
    d = build_decider(_cfg(policies_dir))
    with pytest.raises(ConfigError) as info:
        await d.start()
    assert "authz.rego" in str(info.value)
    await d.close()


async def test_file_change_is_picked_up_by_the_watcher(policies_dir: Path) -> None:
    d = build_decider(
        PolicyConfig(policy_dirs=(str(policies_dir),), watch=True, watch_interval_ms=50)
    )
    await d.start()
    try:
        first = d.revision
        assert (await d.decide(PATH, make_input())).allowed
        (policies_dir / AUTHZ).write_text(
            "package ztproxy.authz\nimport rego.v1\n"
            'decision := {"allowed": false, "reasons": ["closed"]}\n'
        )
        for _ in range(100):  # bounded: 5 s
            if d.revision != first:
                break
            await asyncio.sleep(0.05)
        assert d.revision != first
        got = await d.decide(PATH, make_input())
        assert (got.allowed, got.reasons, got.cached) == (False, ("closed",), False)
    finally:
        await d.close()


async def test_readiness_and_stats(policies_dir: Path) -> None:
    d = build_decider(_cfg(policies_dir))
    assert d.readiness()["policy_loaded"] is False
    with pytest.raises(ServiceUnavailable) as info:
        await d.decide(PATH, make_input())
    assert info.value.reason == "policy_unavailable"
    await d.start()
    assert d.readiness() == {"policy_loaded": True, "policy_breaker_closed": True}
    await d.decide(PATH, make_input())
    assert d.stats()["policy_decisions"] == 2
    await d.close()


async def test_no_blocking_call_on_the_loop(policies_dir: Path) -> None:
    from blockbuster import blockbuster_ctx

    d = build_decider(
        PolicyConfig(policy_dirs=(str(policies_dir),), watch=True, watch_interval_ms=50)
    )
    with blockbuster_ctx():
        await d.start()
        assert (await d.decide(PATH, make_input())).allowed
        assert await d.reload()
        await asyncio.sleep(0.12)  # let the watcher poll (stat in a worker thread)
        await d.close()
