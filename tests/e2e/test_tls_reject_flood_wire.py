"""Issue 13, finding 8: each failed TLS handshake wrote a signed audit record and a log
line, unthrottled (11,273 records in 5 s from one client). Now one record at once and
one aggregate (with the count) per source, reason and interval; memory is bounded."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest
from e2e_harness import StartProxy, open_route

from ztproxy.server.rejections import RejectAggregator

FLOOD = 40


async def _fail_handshake(port: int, ctx: ssl.SSLContext) -> None:
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
        )
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await asyncio.wait_for(reader.read(), 5)
        writer.close()
    except (ConnectionError, ssl.SSLError, TimeoutError, OSError):
        pass


async def test_tls_rejected_flood_makes_two_records_with_the_count(
    start_proxy: StartProxy, upstream: str
) -> None:
    run = await start_proxy(routes=[open_route(upstream)])
    no_cert = run.ctx(None)
    for _ in range(FLOOD):
        await _fail_handshake(run.proxy.port, no_cert)
    failures = run.proxy.metrics.tls_handshake_failures.labels("no_client_certificate")
    for _ in range(500):  # until the proxy has seen every failure
        if failures._value.get() >= FLOOD:
            break
        await asyncio.sleep(0.01)
    await run.proxy.stop()  # flushes the interval's aggregate
    recs = [r for r in run.audit_records() if r.get("kind") == "tls_rejected"]
    assert len(recs) == 2, recs
    first, aggregate = recs
    assert first["policy_reasons"] == [] and first["source_address"] == "127.0.0.1"
    assert aggregate["policy_reasons"] == [f"count={FLOOD - 1}"]
    assert (aggregate["reason"], aggregate["source_address"]) == (
        "no_client_certificate",
        "127.0.0.1",
    )
    assert failures._value.get() == FLOOD


async def test_aggregator_memory_is_bounded() -> None:
    out: list[tuple[Any, ...]] = []
    agg = RejectAggregator(lambda *a: out.append(a), interval=3600, max_keys=8)
    for i in range(10_000):
        agg(f"10.0.{i // 256}.{i % 256}", "tls_handshake_failed", None, None)
    assert agg.tracked() <= 9  # 8 sources + the "*" overflow
    assert len(out) == 8  # the first of each tracked source, at once
    agg.flush()
    assert out[-1] == ("*", "tls_handshake_failed", None, None, 10_000 - 8)
    assert agg.tracked() == 0


@pytest.mark.parametrize("same", [True, False])
async def test_aggregate_keeps_a_fingerprint_only_when_all_agree(same: bool) -> None:
    out: list[tuple[Any, ...]] = []
    agg = RejectAggregator(lambda *a: out.append(a), interval=3600)
    for i in range(3):
        agg("10.0.0.1", "svid_bad_spiffe_id", "aa" if same else f"a{i}", None)
    agg.flush()
    assert out[-1] == ("10.0.0.1", "svid_bad_spiffe_id", "aa" if same else None, None, 2)
