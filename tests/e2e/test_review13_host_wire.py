"""Review of issue 13: the Host the upstream receives is the host the router and the
policy saw. Over real mTLS with the lab's echo upstream (it answers with the headers
it received)."""

from __future__ import annotations

import json

from e2e_harness import StartProxy, open_route, raw_exchange


async def _upstream_host(run, host: str, *extra: str) -> str:  # type: ignore[no-untyped-def]
    lines = ["GET /payments/x HTTP/1.1", f"Host: {host}", *extra, "", ""]
    if not any(e.lower().startswith("connection:") for e in extra):
        lines.insert(-2, "Connection: close")
    reply = await raw_exchange(run.proxy.port, run.ctx(), "\r\n".join(lines).encode())
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"200", reply
    got = [v for k, v in json.loads(body)["headers"] if k.lower() == "host"]
    assert len(got) == 1, got
    return str(got[0])


async def test_connection_header_naming_host_cannot_replace_the_host(
    start_proxy: StartProxy, upstream: str
) -> None:
    # "Connection: close, host" used to drop the client's Host, so the upstream got the
    # client library's default (its own address) while the policy decided on "localhost".
    run = await start_proxy(routes=[open_route(upstream, host="localhost")])
    assert await _upstream_host(run, "localhost", "Connection: close, host") == "localhost"


async def test_upstream_host_is_the_normalized_host(start_proxy: StartProxy, upstream: str) -> None:
    # The router and the policy saw "localhost"; the upstream used to get "LOCALHOST.".
    run = await start_proxy(routes=[open_route(upstream)])
    assert await _upstream_host(run, "LOCALHOST.") == "localhost"
    assert await _upstream_host(run, "LocalHost.:9999") == "localhost:9999"
    assert await _upstream_host(run, "[::1]:80") == "[::1]:80"
    rec = [r for r in await run.records(at_least=3) if r.get("kind") == "request"]
    assert [r["host"] for r in rec[-3:]] == ["localhost", "localhost", "[::1]"]
