"""A stand-in for an OPA server, for tests only: NOT OPA.

An aiohttp server on 127.0.0.1 that speaks the part of OPA's Data API the proxy uses,
`POST /v1/data/<path>` with `{"input": ...}` -> `{"result": ...}` (or `{}` when the
decision is undefined), backed by the embedded regorus engine over the same policy
files, so remote and embedded decisions can be compared. `mode` injects the failures
a real OPA or network can show: "slow" (answers after `delay` seconds), "500",
"garbage" (a body that is not JSON), "reset" (connection reset without an answer),
"error_with_true" (HTTP 500 carrying {"result": true}), "array" ([true] as the body),
"raw" (`raw_body` as it is, e.g. `{"result": false, "result": true}`).
`seen_auth` records the Authorization headers received (to test the bearer token).
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import struct

from aiohttp import web

from ztproxy.policy.embedded import EmbeddedEngine
from ztproxy.policy.engine import EngineError


class StandInOpa:
    def __init__(self, policy_dirs: list[str], ssl_context: ssl.SSLContext | None = None) -> None:
        self.engine = EmbeddedEngine(policy_dirs)
        self.mode = "normal"
        self.delay = 1.0
        self.calls = 0
        self.seen_auth: list[str | None] = []
        self.raw_body = b"{}"
        self._ssl = ssl_context
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        await self.engine.start()
        app = web.Application()
        app.router.add_post("/v1/data/{path:.*}", self._data)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self.engine.close()

    async def _health(self, _request: web.Request) -> web.Response:
        return web.json_response({})

    async def _data(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        self.seen_auth.append(request.headers.get("Authorization"))
        body = await request.json()
        if self.mode == "slow":
            await asyncio.sleep(self.delay)
        elif self.mode == "500":
            return web.json_response({"code": "internal_error", "message": "boom"}, status=500)
        elif self.mode == "garbage":
            return web.Response(body=b"<html>not json", content_type="application/json")
        elif self.mode == "error_with_true":
            return web.json_response({"result": True}, status=500)
        elif self.mode == "array":
            return web.json_response([True])
        elif self.mode == "raw":  # a body byte for byte (duplicate members and the like)
            return web.Response(body=self.raw_body, content_type="application/json")
        elif self.mode == "reset":
            transport = request.transport
            assert transport is not None
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            return web.Response()
        try:
            raw = self.engine.evaluate_sync(request.match_info["path"], body.get("input"))
        except EngineError as exc:
            return web.json_response({"code": "internal_error", "message": exc.detail}, status=500)
        if not raw.defined:
            return web.Response(body=b"{}", content_type="application/json")
        return web.Response(
            body=json.dumps({"result": raw.value}).encode(), content_type="application/json"
        )
