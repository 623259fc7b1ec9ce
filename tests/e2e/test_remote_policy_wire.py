"""The remote engine through the proxy: ztproxy asking an OPA server over its REST
Data API. OPA itself is not installable here, so these tests speak to the suite's
stand-in (tests/policy/policy_standin.py: an aiohttp server speaking OPA's Data API,
backed by the embedded engine; NOT OPA). The last test runs the same against a real
`opa` binary whenever one is on PATH, and skips cleanly otherwise."""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import StartProxy, open_route

_spec = importlib.util.spec_from_file_location(
    "policy_standin", Path(__file__).resolve().parent.parent / "policy" / "policy_standin.py"
)
assert _spec is not None and _spec.loader is not None
_standin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_standin)
StandInOpa = _standin.StandInOpa


def _remote(url: str, **over: Any) -> dict[str, Any]:
    cfg = {
        "engine": "opa",
        "opa_url": url,
        "timeout_ms": 250,
        "cache_ttl_ms": 0,
        "breaker_failures": 3,
        "breaker_cooldown_ms": 60000,
    }
    cfg.update(over)
    return cfg


async def test_remote_allow_deny_and_every_failure(
    start_proxy: StartProxy, upstream: str, test_policy_dir: Path
) -> None:
    opa = StandInOpa([str(test_policy_dir)])
    await opa.start()
    try:
        run = await start_proxy(routes=[open_route(upstream)], policy=_remote(opa.url))
        assert (await run.request("GET", "/payments/x"))[0] == 200
        assert (await run.request("GET", "/payments/x", workload="reports"))[0] == 403
        expectations = [
            ("slow", 503, "policy_timeout"),
            ("500", 503, "policy_engine_error"),
            ("garbage", 503, "policy_engine_error"),
            ("reset", 503, "policy_unavailable"),
            ("error_with_true", 403, "policy_result_invalid"),
        ]
        for mode, status, reason in expectations:
            # a fresh proxy each time, so the breaker of one case does not answer the next
            await run.proxy.stop()
            run = await start_proxy(routes=[open_route(upstream)], policy=_remote(opa.url))
            opa.mode, opa.delay = mode, 1.0
            got, _, _ = await run.request("GET", "/payments/x")
            assert got == status, mode
            assert (await run.records())[-1]["reason"] == reason, mode
        opa.mode = "normal"
    finally:
        await opa.close()


async def test_remote_down_then_breaker_opens(start_proxy: StartProxy, upstream: str) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    run = await start_proxy(
        routes=[open_route(upstream)], policy=_remote(f"http://127.0.0.1:{port}")
    )
    reasons = []
    for _ in range(5):
        status, _, _ = await run.request("GET", "/payments/x")
        assert status == 503  # never an allow
        reasons.append((await run.records())[-1]["reason"])
    assert reasons[0] == "policy_unavailable"
    assert reasons[-1] == "policy_circuit_open"
    assert run.proxy.readiness()["ready"] is False


@pytest.mark.opa
@pytest.mark.skipif(shutil.which("opa") is None, reason="no opa binary on PATH")
async def test_against_a_real_opa(
    start_proxy: StartProxy, upstream: str, test_policy_dir: Path
) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen(
        ["opa", "run", "--server", "--addr", f"127.0.0.1:{port}", str(test_policy_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await asyncio.sleep(1.0)
        run = await start_proxy(
            routes=[open_route(upstream)], policy=_remote(f"http://127.0.0.1:{port}")
        )
        assert (await run.request("GET", "/payments/x"))[0] == 200
        assert (await run.request("GET", "/payments/x", workload="reports"))[0] == 403
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize(
    "body",
    [b'{"result": false, "result": true}', b'{"result": {"allowed": false, "allowed": true}}'],
)
async def test_remote_duplicate_members_are_a_403_audited(
    start_proxy: StartProxy, upstream: str, test_policy_dir: Path, body: bytes
) -> None:
    opa = StandInOpa([str(test_policy_dir)])
    await opa.start()
    try:
        run = await start_proxy(routes=[open_route(upstream)], policy=_remote(opa.url))
        assert (await run.request("GET", "/payments/x"))[0] == 200
        assert (await run.records())[-1]["engine"] == "opa-rest"
        opa.mode, opa.raw_body = "raw", body
        assert (await run.request("GET", "/payments/x"))[0] == 403
        rec = (await run.records())[-1]
        assert (rec["decision"], rec["reason"], rec["engine"]) == (
            "deny",
            "policy_result_invalid",
            "opa-rest",
        )
    finally:
        await opa.close()
