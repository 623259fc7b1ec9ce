"""Issue 13, finding 9: one workload's slow request bodies filled the shared upstream
pool and every other workload got 504. Each caller (SPIFFE ID) now has a share of the
pool (429 `caller_busy` beyond it) and a route may have its own limit (503
`route_busy`)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from e2e_harness import Running, StartProxy, open_route

ALLOW_ALL = """
package ztproxy.authz

import rego.v1

default decision := {"allowed": true}
"""


def _allow_all(tmp_path: Path) -> Path:
    d = tmp_path / "allow-all"
    d.mkdir()
    (d / "authz.rego").write_text(ALLOW_ALL)
    return d


async def _hold_upload(
    run: Running,
    workload: str,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A POST whose body stops after 3 of 100 bytes: it holds an upstream connection."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", run.proxy.port, ssl=run.ctx(workload), server_hostname="localhost"
    )
    writer.write(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nabc")
    await writer.drain()
    return reader, writer


async def _until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


async def test_a_slow_caller_does_not_starve_another(
    start_proxy: StartProxy, upstream: str, tmp_path: Path
) -> None:
    run = await start_proxy(
        routes=[open_route(upstream, path_prefix="/")],
        policy_dirs=[_allow_all(tmp_path)],
        extra={"limits": {"max_concurrent_requests": 3, "max_concurrent_per_caller": 2}},
    )
    pipeline = run.proxy.pipeline
    assert pipeline is not None
    checkout = "spiffe://corp.example/ns/prod/sa/checkout"
    held = [await _hold_upload(run, "checkout") for _ in range(2)]
    await _until(lambda: pipeline.limits.callers.get(checkout) == 2, "two uploads in flight")
    # the slow caller's third request is refused at once ...
    status, _, _ = await run.request("GET", "/x", workload="checkout")
    assert status == 429
    rec = [r for r in await run.records() if r.get("kind") == "request"][-1]
    assert (rec["reason"], rec["status"], rec["source_spiffe_id"]) == ("caller_busy", 429, checkout)
    # ... while another workload still gets through the shared pool
    status, _, _ = await run.request("GET", "/x", workload="reports")
    assert status == 200
    for reader, writer in held:
        writer.write(b"d" * 97)
        await writer.drain()
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)).startswith(b"HTTP/1.1 200")
        writer.close()
    await _until(lambda: not pipeline.limits.callers, "every slot given back")


async def test_route_limit_is_503_route_busy(
    start_proxy: StartProxy, upstream: str, tmp_path: Path
) -> None:
    run = await start_proxy(
        routes=[open_route(upstream, path_prefix="/", max_concurrent=1)],
        policy_dirs=[_allow_all(tmp_path)],
    )
    pipeline = run.proxy.pipeline
    assert pipeline is not None
    reader, writer = await _hold_upload(run, "checkout")
    await _until(lambda: pipeline.limits.routes.get("payments-api") == 1, "upload in flight")
    status, _, _ = await run.request("GET", "/x", workload="reports")
    assert status == 503
    rec = [r for r in await run.records() if r.get("kind") == "request"][-1]
    assert rec["reason"] == "route_busy"
    writer.close()
    try:
        await asyncio.wait_for(reader.read(), 5)
    except (ConnectionError, ssl.SSLError, TimeoutError):
        pass
    await _until(lambda: not pipeline.limits.routes, "slot given back on a client abort")
