"""A lab on one machine: example upstream services, client TLS contexts and a proxy
config built around a dev PKI. Used by `ztproxy demo`, the benchmarks and the tests,
so all three exercise the same real parts (real TLS on loopback, real aiohttp
upstreams, real tokens, the embedded Rego engine, the real audit log).

Nothing here listens anywhere but 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from aiohttp import WSMsgType, web

from ..audit.keys import PRIVATE_FILE, PUBLIC_FILE
from .pki import DevPki

REPO_POLICIES = Path(__file__).resolve().parent.parent.parent / "policies"

# The request headers an upstream echoes back; tests read identity headers from here.
_STREAM_CHUNK = 64 * 1024


def upstream_app(name: str) -> web.Application:
    """An example service: echoes what it received, streams, counts uploads,
    echoes WebSocket messages, and can be slow on purpose."""

    async def echo(request: web.Request) -> web.Response:
        body = (
            await request.read()
            if request.can_read_body and (request.content_length or 0) <= 65536
            else b""
        )
        return web.json_response(
            {
                "service": name,
                "method": request.method,
                "raw_path": request.raw_path,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body_bytes": len(body),
            }
        )

    async def download(request: web.Request) -> web.StreamResponse:
        total = int(request.match_info["size"])
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = total
        await resp.prepare(request)
        chunk = b"z" * _STREAM_CHUNK
        sent = 0
        while sent < total:
            part = chunk[: min(_STREAM_CHUNK, total - sent)]
            await resp.write(part)
            sent += len(part)
        await resp.write_eof()
        return resp

    async def upload(request: web.Request) -> web.Response:
        count = 0
        async for data in request.content.iter_chunked(_STREAM_CHUNK):
            count += len(data)
        return web.json_response({"service": name, "received": count})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(int(request.match_info["ms"]) / 1000)
        return web.json_response({"service": name, "slow": True})

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(f"{name}:{msg.data}")
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/stream/{size:\\d+}", download)
    app.router.add_route("*", "/upload", upload)
    app.router.add_route("*", "/slow/{ms:\\d+}", slow)
    app.router.add_get("/ws", websocket)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def start_app(
    app: web.Application, *, port: int = 0, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context)
    await site.start()
    server = cast("asyncio.Server | None", site._server)  # noqa: SLF001 - the bound port is only reachable here
    assert server is not None and server.sockets
    return runner, server.sockets[0].getsockname()[1]


def client_context(pki: DevPki, workload: str | None) -> ssl.SSLContext:
    """A client TLS context trusting the dev CA and presenting `workload`'s
    certificate (none when `workload` is None)."""
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    if workload is not None:
        cert, key = pki.workloads[workload]
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def proxy_config(
    pki: DevPki,
    *,
    upstreams: Mapping[str, str],
    audit_dir: str | Path,
    policy_dirs: Sequence[str | Path] | None = None,
    port: int = 0,
    admin_port: int | None = 0,
    routes: Sequence[Mapping[str, Any]] | None = None,
    policy: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A complete config (as the YAML would parse) for the dev PKI. `upstreams` maps
    service name -> URL; by default each service gets the route `/<service>/`."""
    policy_dirs = policy_dirs or [REPO_POLICIES]
    cfg: dict[str, Any] = {
        "listener": {
            "address": "127.0.0.1",
            "port": port,
            "cert_file": str(pki.server_cert),
            "key_file": str(pki.server_key),
        },
        "trust_domains": [{"name": pki.trust_domain, "bundle_file": str(pki.ca_cert)}],
        "routes": list(routes)
        if routes is not None
        else [
            {"name": f"{svc}-api", "service": svc, "path_prefix": f"/{svc}", "upstream": url}
            for svc, url in upstreams.items()
        ],
        "identity": {
            "issuers": [
                {
                    "name": "dev-sso",
                    "kind": "user",
                    "issuer": pki.user_issuer,
                    "audiences": [pki.audience],
                    "jwks_file": str(pki.user_jwks),
                    "algorithms": ["ES256"],
                },
                {
                    "name": "dev-devices",
                    "kind": "device",
                    "issuer": pki.device_issuer,
                    "audiences": [pki.audience],
                    "jwks_file": str(pki.device_jwks),
                    "algorithms": ["ES256"],
                },
            ]
        },
        # Data files under a policy root load at their directory's path, as OPA does.
        "policy": {
            "engine": "embedded",
            "policy_dirs": [str(p) for p in policy_dirs],
            **(policy or {}),
        },
        "audit": {"dir": str(audit_dir), "signing_key": str(_audit_key(pki))},
        "admin": {"enabled": admin_port is not None, "port": admin_port or 0},
        "logging": {"level": "warning"},
    }
    for key, value in (extra or {}).items():
        cfg[key] = value
    return cfg


def _audit_key(pki: DevPki) -> Path:
    return pki.audit_dir / PRIVATE_FILE


def audit_public_key(pki: DevPki) -> Path:
    return pki.audit_dir / PUBLIC_FILE
