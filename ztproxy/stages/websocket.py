"""Stage 6 (variant): proxy an allowed WebSocket upgrade.

The upgrade request went through every check an HTTP request does (it is one); only
then is the upstream WebSocket opened, and only when it is open is the client's
upgrade accepted, so a failing upstream still gets a clean 502. Messages are then
relayed both ways until either side closes; the close code is passed on.

A session is authorized once, at the upgrade, and so it must not outlive what that
authorization rested on: it is closed (code 1008, policy violation) at the earliest of
the user token's `exp`, the device token's `exp` and the client certificate's
`notAfter` (`session_deadline`). Each live session is kept in `LiveSessions` with its
policy input; `LiveSessions.recheck(decide)` asks the policy again for every one (after
a policy reload) and closes those it no longer allows, or whose question fails.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy

from ..errors import UpstreamTimeout, UpstreamUnavailable
from ..model import Credentials, Decision
from .forward import ForwardResult, yarl_url

POLICY_VIOLATION = aiohttp.WSCloseCode.POLICY_VIOLATION  # 1008
Decide = Callable[[str, Mapping[str, Any]], Awaitable[Decision]]


def session_deadline(creds: Credentials, not_after: datetime) -> float:
    """Epoch seconds at which the authorization of a session runs out: the earliest of
    the tokens' `exp` and the client certificate's `notAfter`."""
    ends = [not_after.timestamp()]
    for principal in (creds.user, creds.device):
        if principal is not None and principal.expires_at:
            ends.append(float(principal.expires_at))
    return min(ends)


class _Session:
    __slots__ = ("decision_path", "doc", "stop")

    def __init__(self, decision_path: str, doc: Mapping[str, Any]) -> None:
        self.decision_path = decision_path
        self.doc = doc
        self.stop = asyncio.Event()


class LiveSessions:
    """The WebSocket sessions now open, with the policy input each was allowed on."""

    def __init__(self) -> None:
        self._live: set[_Session] = set()

    def __len__(self) -> int:
        return len(self._live)

    def open(self, decision_path: str, doc: Mapping[str, Any]) -> _Session:
        session = _Session(decision_path, doc)
        self._live.add(session)
        return session

    def close(self, session: _Session) -> None:
        self._live.discard(session)

    async def recheck(self, decide: Decide) -> int:
        """Ask the policy again for every live session; close each one it does not
        allow now (a deny, an error, anything but an allow). Returns how many closed."""
        closed = 0
        for session in list(self._live):
            try:
                allowed = (await decide(session.decision_path, session.doc)).allowed
            except Exception:  # noqa: BLE001 - fail closed: no answer is no session
                allowed = False
            if not allowed:
                session.stop.set()
                self._live.discard(session)
                closed += 1
        return closed


_WS_HEADERS = (
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "sec-websocket-accept",
)


def is_websocket_upgrade(headers: CIMultiDictProxy[str]) -> bool:
    if headers.get("Upgrade", "").strip().lower() != "websocket":
        return False
    tokens = {t.strip().lower() for v in headers.getall("Connection", []) for t in v.split(",")}
    return "upgrade" in tokens


async def _relay(
    source: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
    sink: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
) -> None:
    async for msg in source:
        if msg.type == WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type == WSMsgType.PING:
            await sink.ping(msg.data)
        elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            break
    code = source.close_code or aiohttp.WSCloseCode.OK
    await sink.close(code=code)


async def proxy_websocket(
    request: web.BaseRequest,
    *,
    upstream_url: str,
    target: str,
    headers: CIMultiDict[str],
    session: aiohttp.ClientSession,
    ssl_context: ssl.SSLContext | None,
    connect_timeout: float,
    deadline: float | None = None,
    stop: asyncio.Event | None = None,
    clock: Callable[[], float] = time.time,
) -> ForwardResult:
    """`deadline` (epoch seconds by `clock`): close the session then; `stop`: close it
    when set (a policy recheck said no). Either closes both sides with 1008."""
    ws_url = "ws" + upstream_url[4:] if upstream_url.startswith("http") else upstream_url
    for name in _WS_HEADERS:
        headers.popall(name, None)
    protocols = tuple(
        p.strip()
        for v in request.headers.getall("Sec-WebSocket-Protocol", [])
        for p in v.split(",")
        if p.strip()
    )
    try:
        upstream = await session.ws_connect(
            yarl_url(ws_url + target),
            headers=headers,
            protocols=protocols,
            ssl=ssl_context if ssl_context is not None else True,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=connect_timeout),
            autoping=True,
            max_msg_size=16 * 1024 * 1024,
        )
    except TimeoutError:
        raise UpstreamTimeout("upstream_timeout") from None
    except aiohttp.WSServerHandshakeError:
        raise UpstreamUnavailable("upstream_websocket_refused") from None
    except (aiohttp.ClientError, OSError):
        raise UpstreamUnavailable("upstream_connect_failed") from None
    client = web.WebSocketResponse(
        protocols=(upstream.protocol,) if upstream.protocol else (),
        autoping=True,
        max_msg_size=16 * 1024 * 1024,
    )
    try:
        await client.prepare(request)
        tasks = [
            asyncio.create_task(_relay(client, upstream), name="ws-client->upstream"),
            asyncio.create_task(_relay(upstream, client), name="ws-upstream->client"),
        ]
        waits: list[asyncio.Task[Any]] = list(tasks)
        stopper = None
        if stop is not None:
            stopper = asyncio.create_task(stop.wait(), name="ws-recheck-stop")
            waits.append(stopper)
        timeout = None if deadline is None else max(deadline - clock(), 0.0)
        done, pending = await asyncio.wait(
            waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        revoked = not done or (stopper is not None and stopper in done)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if revoked:
            await upstream.close(code=POLICY_VIOLATION)
            await client.close(code=POLICY_VIOLATION)
            return ForwardResult(client, 101)
        done = {t for t in done if t is not stopper}
        for task in done:
            if task.exception() is not None and not isinstance(
                task.exception(), (aiohttp.ClientError, ConnectionError)
            ):
                raise task.exception()  # type: ignore[misc]
    finally:
        await upstream.close()
        await client.close()
    return ForwardResult(client, 101)
