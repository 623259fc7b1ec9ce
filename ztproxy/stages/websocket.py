"""Stage 6 (variant): proxy an allowed WebSocket upgrade.

The upgrade request went through every check an HTTP request does (it is one); only
then is the upstream WebSocket opened, and only when it is open is the client's
upgrade accepted, so a failing upstream still gets a clean 502. Messages are then
relayed both ways until either side closes; the close code is passed on.
"""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy

from ..errors import UpstreamTimeout, UpstreamUnavailable
from .forward import ForwardResult, yarl_url

_WS_HEADERS = ("sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
               "sec-websocket-protocol", "sec-websocket-accept")


def is_websocket_upgrade(headers: CIMultiDictProxy[str]) -> bool:
    if headers.get("Upgrade", "").strip().lower() != "websocket":
        return False
    tokens = {t.strip().lower() for v in headers.getall("Connection", []) for t in v.split(",")}
    return "upgrade" in tokens


async def _relay(source: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
                 sink: aiohttp.ClientWebSocketResponse | web.WebSocketResponse) -> None:
    async for msg in source:
        if msg.type == WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type == WSMsgType.PING:
            await sink.ping(msg.data)
        elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED,
                          WSMsgType.ERROR):
            break
    code = source.close_code or aiohttp.WSCloseCode.OK
    await sink.close(code=code)


async def proxy_websocket(request: web.BaseRequest, *, upstream_url: str, target: str,
                          headers: CIMultiDict[str], session: aiohttp.ClientSession,
                          ssl_context: ssl.SSLContext | None,
                          connect_timeout: float) -> ForwardResult:
    ws_url = "ws" + upstream_url[4:] if upstream_url.startswith("http") else upstream_url
    for name in _WS_HEADERS:
        headers.popall(name, None)
    protocols = tuple(p.strip() for v in request.headers.getall("Sec-WebSocket-Protocol", [])
                      for p in v.split(",") if p.strip())
    try:
        upstream = await session.ws_connect(
            yarl_url(ws_url + target), headers=headers, protocols=protocols,
            ssl=ssl_context if ssl_context is not None else True,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=connect_timeout),
            autoping=True, max_msg_size=16 * 1024 * 1024,
        )
    except TimeoutError:
        raise UpstreamTimeout("upstream_timeout") from None
    except aiohttp.WSServerHandshakeError:
        raise UpstreamUnavailable("upstream_websocket_refused") from None
    except (aiohttp.ClientError, OSError):
        raise UpstreamUnavailable("upstream_connect_failed") from None
    client = web.WebSocketResponse(protocols=(upstream.protocol,) if upstream.protocol else (),
                                   autoping=True, max_msg_size=16 * 1024 * 1024)
    try:
        await client.prepare(request)
        tasks = [asyncio.create_task(_relay(client, upstream), name="ws-client->upstream"),
                 asyncio.create_task(_relay(upstream, client), name="ws-upstream->client")]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if task.exception() is not None and not isinstance(
                    task.exception(), (aiohttp.ClientError, ConnectionError)):
                raise task.exception()  # type: ignore[misc]
    finally:
        await upstream.close()
        await client.close()
    return ForwardResult(client, 101)
