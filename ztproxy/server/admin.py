"""The admin listener (127.0.0.1 by default, its own port, plain HTTP, never the
proxy's port): /healthz (alive), /readyz (ready only when TLS material, issuer keys,
policy and audit log are all usable; the JSON body says which is not), /metrics
(Prometheus text format)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from .app import Proxy


async def start_admin(proxy: Proxy) -> tuple[web.AppRunner, int]:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(request: web.Request) -> web.Response:
        state = proxy.readiness()
        return web.json_response(state, status=200 if state["ready"] else 503)

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(proxy.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    cfg = proxy.config.admin
    site = web.TCPSite(runner, cfg.address, cfg.port, reuse_port=proxy.reuse_port or None)
    await site.start()
    server = cast("asyncio.Server | None", site._server)  # noqa: SLF001 - aiohttp exposes no public bound-port accessor
    port = server.sockets[0].getsockname()[1] if server and server.sockets else cfg.port
    return runner, port
