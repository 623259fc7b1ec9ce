"""Issue 13, finding 5: slowloris and slow bodies, over real TLS sockets with short
timeouts. Each test waits on events (the server closing, a counter), never on a clock."""

from __future__ import annotations

import asyncio
import ssl

from e2e_harness import Running, StartProxy, open_route


async def _connect(run: Running) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        "127.0.0.1", run.proxy.port, ssl=run.ctx(), server_hostname="localhost"
    )


async def _read_rest(reader: asyncio.StreamReader, first: bytes = b"") -> bytes:
    out = [first]
    try:
        async with asyncio.timeout(5):
            while chunk := await reader.read(65536):
                out.append(chunk)
    except (TimeoutError, ConnectionError, ssl.SSLError):
        pass
    return b"".join(out)


async def _dribble_until_closed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, gap: float
) -> bytes:
    """Send `data` one byte every `gap` seconds until the server answers or closes;
    return what it sent. Bounded by len(data) * gap."""
    for byte in data:
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except (ConnectionError, ssl.SSLError):
            return await _read_rest(reader)
        try:
            first = await asyncio.wait_for(reader.read(65536), gap)
        except TimeoutError:
            continue
        except (ConnectionError, ssl.SSLError):
            return b""
        return await _read_rest(reader, first)
    return b""


async def test_slowloris_headers_get_408_and_the_connection_closed(
    start_proxy: StartProxy, upstream: str
) -> None:
    run = await start_proxy(
        routes=[open_route(upstream)], extra={"timeouts": {"request_header_seconds": 0.4}}
    )
    reader, writer = await _connect(run)
    slow = b"GET /payments/x HTTP/1.1\r\nHost: localhost\r\nX-A: " + b"a" * 200
    reply = await _dribble_until_closed(reader, writer, slow, 0.05)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 408"), reply[:80]
    run.sent += 1
    rec = [r for r in await run.records() if r["kind"] == "request"][-1]
    assert (rec["reason"], rec["status"], rec["decision"]) == (
        "request_header_timeout",
        408,
        "deny",
    )
    assert rec["source_spiffe_id"].endswith("/sa/checkout")
    assert run.proxy.pipeline is not None and run.proxy.pipeline.header_phase == {}


async def test_keepalive_connection_dribbling_its_next_request_is_cut(
    start_proxy: StartProxy, upstream: str
) -> None:
    run = await start_proxy(
        routes=[open_route(upstream)], extra={"timeouts": {"request_header_seconds": 0.4}}
    )
    reader, writer = await _connect(run)
    writer.write(b"GET /payments/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    length = int(
        next(
            line.split(b":")[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
    )
    await reader.readexactly(length)
    reply = await _dribble_until_closed(reader, writer, b"GET /payments/y HTTP/1.1\r\n" * 8, 0.05)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 408"), reply[:80]


async def test_header_phase_connections_capped_per_source(
    start_proxy: StartProxy, upstream: str
) -> None:
    run = await start_proxy(
        routes=[open_route(upstream)],
        extra={
            "limits": {"max_header_phase_per_source": 2},
            "timeouts": {"request_header_seconds": 30},
        },
    )
    assert run.proxy.pipeline is not None
    held = []
    for _ in range(2):
        reader, writer = await _connect(run)
        writer.write(b"GET /payments/x HTTP/1.1\r\n")
        await writer.drain()
        held.append((reader, writer))
    for _ in range(200):  # until the proxy has both in its header phase
        if run.proxy.pipeline.header_phase.get("127.0.0.1") == 2:
            break
        await asyncio.sleep(0.01)
    assert run.proxy.pipeline.header_phase.get("127.0.0.1") == 2
    reader, writer = await _connect(run)
    reply = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 503"), reply[:80]
    run.sent += 1
    rec = [r for r in await run.records() if r["kind"] == "request"][-1]
    assert rec["reason"] == "header_phase_limit"
    for reader, writer in held:  # the first two finish their request normally
        writer.write(b"Host: localhost\r\nConnection: close\r\n\r\n")
        await writer.drain()
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200")
        writer.close()


async def test_slow_body_gets_408(start_proxy: StartProxy, upstream: str) -> None:
    run = await start_proxy(
        routes=[open_route(upstream)], extra={"timeouts": {"body_idle_seconds": 0.3}}
    )
    reader, writer = await _connect(run)
    writer.write(
        b"POST /payments/upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nabc"
    )
    await writer.drain()
    reply = await _dribble_until_closed(reader, writer, b"d" * 97, 0.6)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 408"), reply[:80]
    run.sent += 1
    rec = [r for r in await run.records() if r["kind"] == "request"][-1]
    assert (rec["reason"], rec["status"]) == ("body_idle_timeout", 408)


async def test_body_total_timeout(start_proxy: StartProxy, upstream: str) -> None:
    run = await start_proxy(
        routes=[open_route(upstream)],
        extra={"timeouts": {"body_idle_seconds": 5, "body_total_seconds": 0.5}},
    )
    reader, writer = await _connect(run)
    writer.write(
        b"POST /payments/upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n"
    )
    await writer.drain()
    reply = await _dribble_until_closed(reader, writer, b"d" * 1000, 0.05)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 408"), reply[:80]
    run.sent += 1
    rec = [r for r in await run.records() if r["kind"] == "request"][-1]
    assert (rec["reason"], rec["status"]) == ("body_total_timeout", 408)


async def _chunked(run: Running, extension: bytes) -> tuple[bytes, bytes]:
    reader, writer = await _connect(run)
    writer.write(
        b"POST /payments/upload HTTP/1.1\r\nHost: localhost\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5" + extension + b"\r\nhello\r\n0\r\n\r\n"
    )
    await writer.drain()
    reply = await _read_rest(reader)
    writer.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    return head, body


async def test_long_chunk_extension_is_400(start_proxy: StartProxy, upstream: str) -> None:
    """Finding 6: a 64 KiB chunk extension used to pass."""
    run = await start_proxy(routes=[open_route(upstream, path_prefix="/")])
    head, _ = await _chunked(run, b";x=" + b"a" * 65536)
    assert head.startswith(b"HTTP/1.1 400"), head[:80]
    run.sent += 1
    rec = [r for r in await run.records() if r["kind"] == "request"][-1]
    assert (rec["reason"], rec["status"]) == ("chunk_extension_too_long", 400)
    head, body = await _chunked(run, b";name=value")  # a short one is fine
    assert head.startswith(b"HTTP/1.1 200"), head[:80]
    assert b'"body_bytes": 5' in body
