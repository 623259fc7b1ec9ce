"""The demo's running parts: its config, its tokens, the lab (two example upstreams and the
real proxy) and the client that sends one scripted request over real mutual TLS.

Stage: none (tooling over the real parts; `demo` says what is sent and judges it). `DemoLab`
starts the upstreams (payments, reports) and the proxy (TLS acceptor, token verifier,
embedded Rego over the shipped policies, signed audit log) on 127.0.0.1, port 0; `send`
returns a `Sent` (the status, or None for a refused handshake, and the request id). The
path traversal goes raw over an asyncio TLS stream, since client libraries normalize `..`.

Trusts its own PKI only. Tokens are minted here and travel in headers; they are never
printed or logged.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from ..audit.keys import PRIVATE_FILE, PUBLIC_FILE
from ..config.load import Config, parse_config
from ..server import Proxy
from .lab import client_context, proxy_config, start_app, upstream_app
from .mint import load_private_key, mint_token
from .pki import DevPki

if TYPE_CHECKING:  # demo imports this module at run time; the types only point back
    from .demo import Scenario

DEVICE_HEADER = "Device-Authorization"


def workload_name(entry: str) -> str:
    return entry.rpartition("/")[2]


def demo_config(
    pki: DevPki,
    upstreams: Mapping[str, str],
    audit_dir: Path,
    policies: Path,
    *,
    admin: bool = False,
) -> dict[str, Any]:
    """The config (as the YAML would parse): /api/v1 -> payments, /reports -> reports."""
    routes = [
        {
            "name": "payments-api",
            "service": "payments",
            "path_prefix": "/api/v1",
            "upstream": upstreams["payments"],
        },
        # The shipped data does not require reports' device tokens to be bound.
        {
            "name": "reports-api",
            "service": "reports",
            "path_prefix": "/reports",
            "upstream": upstreams["reports"],
            "device_binding": "relaxed",
        },
    ]
    # Policies and data under one root, as `opa run policies/` loads them.
    policy = {"policy_dirs": [str(policies)], "data_dirs": [], "watch": False}
    return proxy_config(
        pki,
        upstreams=upstreams,
        audit_dir=audit_dir,
        routes=routes,
        policy=policy,
        admin_port=0 if admin else None,
        extra={
            "audit": {
                "dir": str(audit_dir),
                "signing_key": str(audit_key(pki, PRIVATE_FILE)),
                "checkpoint_interval_seconds": 1.0,
            }
        },
    )


def audit_key(pki: DevPki, name: str = PUBLIC_FILE) -> Path:
    """The dev PKI's audit key file: the public key by default, PRIVATE_FILE for the proxy."""
    if pki.audit_dir is None:
        raise RuntimeError("the dev PKI has no audit key")
    return pki.audit_dir / name


class Tokens:
    """Mints the user and device tokens a scenario carries (keys loaded once)."""

    def __init__(self, pki: DevPki, clock: Callable[[], float] = time.time) -> None:
        self.pki = pki
        self.clock = clock
        self._user_key = load_private_key(pki.user_key)
        self._device_key = load_private_key(pki.device_key)

    def user(self, subject: str, roles: Sequence[str], *, age: int = 0, ttl: int = 600) -> str:
        return mint_token(
            key=self._user_key,
            kid=self.pki.user_kid,
            issuer=self.pki.user_issuer,
            audience=self.pki.audience,
            subject=subject,
            claims={"roles": list(roles)},
            ttl=ttl,
            now=int(self.clock()) - age,
        )

    def device(
        self, device_id: str, bound_to: str, claims: Mapping[str, Any], *, ttl: int = 600
    ) -> str:
        cert = self.pki.workloads[workload_name(bound_to)][0].read_bytes()
        return mint_token(
            key=self._device_key,
            kid=self.pki.device_kid,
            issuer=self.pki.device_issuer,
            audience=self.pki.audience,
            subject=device_id,
            claims=dict(claims),
            bind_cert=cert,
            ttl=ttl,
            now=int(self.clock()),
        )

    def headers(self, s: Scenario) -> dict[str, str]:
        out: dict[str, str] = {}
        if s.user is not None:
            out["Authorization"] = "Bearer " + self.user(s.user, s.roles, age=s.user_age)
        if s.device is not None and s.workload is not None:
            bound = s.device_bound_to or s.workload
            out[DEVICE_HEADER] = "Bearer " + self.device(s.device, bound, s.device_claims)
        return out


@dataclass(frozen=True, slots=True)
class Sent:
    """What came back for one scenario: the status (None when the handshake was
    refused) and the request id the proxy gave it (from the error body or the
    upstream's echo of the asserted x-request-id header)."""

    scenario: Scenario
    status: int | None
    request_id: str | None


class DemoLab:
    """Owns the upstreams and the proxy. `start()` then `stop()` (always, in finally)."""

    def __init__(
        self,
        pki: DevPki,
        audit_dir: Path,
        policies: Path,
        *,
        admin: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pki, self.audit_dir, self.policies = pki, audit_dir, policies
        self.admin, self.clock = admin, clock
        self.runners: list[web.AppRunner] = []
        self.proxy: Proxy | None = None
        self.config: Config | None = None

    @property
    def port(self) -> int:
        assert self.proxy is not None
        return self.proxy.port

    @property
    def base_url(self) -> str:
        return f"https://localhost:{self.port}"

    async def start(self) -> None:
        upstreams: dict[str, str] = {}
        for name in ("payments", "reports"):
            runner, port = await start_app(upstream_app(name))
            self.runners.append(runner)
            upstreams[name] = f"http://127.0.0.1:{port}"
        raw = demo_config(self.pki, upstreams, self.audit_dir, self.policies, admin=self.admin)
        self.config = parse_config(raw, str(self.pki.root))
        self.proxy = Proxy(self.config, clock=self.clock)
        await self.proxy.start()

    async def stop(self) -> None:
        if self.proxy is not None and not self.proxy.stopping:
            await self.proxy.stop()
        for runner in self.runners:
            await runner.cleanup()
        self.runners.clear()

    async def send(self, s: Scenario, tokens: Tokens, timeout: float = 5.0) -> Sent:
        ctx = client_context(self.pki, workload_name(s.workload) if s.workload else None)
        headers = tokens.headers(s)
        if s.raw or s.workload is None:  # one attempt: client libraries retry
            status, body = await raw_request(self.port, ctx, s.method, s.path, headers, timeout)
            return Sent(s, status, _request_id(body))
        try:
            async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=timeout)
            ) as session:
                async with session.request(
                    s.method, self.base_url + s.path, headers=headers, ssl=ctx
                ) as resp:
                    body = await resp.read()
                    return Sent(s, resp.status, _request_id(body))
        except (aiohttp.ClientError, ssl.SSLError, OSError, TimeoutError):
            return Sent(s, None, None)


async def raw_request(
    port: int,
    ctx: ssl.SSLContext,
    method: str,
    target: str,
    headers: Mapping[str, str],
    timeout: float,
) -> tuple[int | None, bytes]:
    """One HTTP/1.1 request written byte for byte (no normalization); (status, body)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: localhost:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
            )
            try:
                writer.write(data)
                await writer.drain()
                reply = await reader.read(256 * 1024)  # one answer, Connection: close
                while len(reply) < 256 * 1024 and (chunk := await reader.read(65536)):
                    reply += chunk
            finally:
                writer.close()
    except (OSError, ssl.SSLError, TimeoutError):
        return None, b""
    head, _, body = reply.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return status, body


def _request_id(body: bytes) -> str | None:
    """From the proxy's error body, or the example upstream's echo of x-request-id."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    if isinstance(doc.get("request_id"), str):
        return str(doc["request_id"])
    for pair in doc.get("headers", []):  # the example upstream echoes what it received
        if isinstance(pair, list) and len(pair) == 2 and str(pair[0]).lower() == "x-request-id":
            return str(pair[1])
    return None
