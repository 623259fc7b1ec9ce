"""Review of issue 13: requests after a refused one on the same connection. Pins what
was found sound over real mTLS: each pipelined request is framed by the parser,
routed and decided on its own; a denied request's body is never run as a request nor
forwarded; no 100 Continue is sent for a request the policy denies; an Upgrade on a
route without WebSocket goes upstream as a plain GET without the Upgrade header."""

from __future__ import annotations

import json
import re

from e2e_harness import StartProxy, open_route, raw_exchange


def _statuses(reply: bytes) -> list[bytes]:
    return re.findall(rb"HTTP/1\.[01] (\d{3}) ", reply)


async def test_denied_body_shaped_like_a_request_is_not_run(
    start_proxy: StartProxy, upstream: str
) -> None:
    run = await start_proxy(routes=[open_route(upstream)])
    inner = b"GET /payments/smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"
    data = (
        b"POST /payments/forbidden/y HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Length: %d\r\n\r\n"
        % len(inner)
        + inner
        + b"GET /payments/after HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    reply = await raw_exchange(run.proxy.port, run.ctx(), data)
    assert _statuses(reply) == [b"403", b"200"], reply
    assert b"/payments/smuggled" not in reply
    paths = [r.get("path") for r in await run.records(at_least=2) if r.get("kind") == "request"]
    assert paths == ["/payments/forbidden/y", "/payments/after"]


async def test_no_100_continue_for_a_denied_request(start_proxy: StartProxy, upstream: str) -> None:
    run = await start_proxy(routes=[open_route(upstream)])
    reply = await raw_exchange(
        run.proxy.port,
        run.ctx(),
        (
            b"POST /payments/forbidden/y HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n"
            b"Content-Length: 5\r\nConnection: close\r\n\r\n"
        ),
        timeout=2,
    )
    assert _statuses(reply) == [b"403"], reply


async def test_upgrade_on_a_route_without_websocket(start_proxy: StartProxy, upstream: str) -> None:
    run = await start_proxy(routes=[open_route(upstream, websocket=False)])
    reply = await raw_exchange(
        run.proxy.port,
        run.ctx(),
        (
            b"GET /payments/x HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
            b"GET /payments/forbidden/z HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        ),
    )
    assert _statuses(reply) == [b"200", b"403"], reply
    first = reply.split(b"\r\n\r\n", 1)[1]
    sent = json.loads(first[: first.index(b"}HTTP/1.1") + 1])
    assert sent["raw_path"] == "/payments/x"
    names = {k.lower() for k, _ in sent["headers"]}
    assert "upgrade" not in names and "connection" not in names
