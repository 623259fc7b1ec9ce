"""Helpers of the wire-level harness: a dev PKI made at run time, real aiohttp upstreams, the
real proxy (TLS acceptor, pipeline, token verifier, embedded Rego, audit log) on
127.0.0.1 port 0, and clients that present real certificates."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDict

from ztproxy.config.load import Config
from ztproxy.devtools.lab import client_context
from ztproxy.devtools.mint import load_private_key, mint_token
from ztproxy.devtools.pki import DevPki
from ztproxy.server import Proxy

CHECKOUT = "checkout"
TEST_POLICY = """
package ztproxy.authz

import rego.v1

default decision := {"allowed": false, "reasons": ["default deny"]}

decision := {"allowed": true, "headers": {"x-tenant": "acme", "x-client-spiffe-id": "forged"},
             "response_headers_to_add": {"x-policy": "yes"}} if {
	input.source.spiffe_id == "spiffe://corp.example/ns/prod/sa/checkout"
	path := input.request.path
	not startswith(path, "/payments/forbidden")
}

decision := {"allowed": false, "http_status": 418, "body": "teapot"} if {
	input.request.path == "/payments/forbidden/teapot"
}
"""


@dataclass
class Running:
    proxy: Proxy
    config: Config
    pki: DevPki
    audit_dir: Path
    sent: int = 0

    @property
    def url(self) -> str:
        return f"https://localhost:{self.proxy.port}"

    def ctx(self, workload: str | None = CHECKOUT) -> ssl.SSLContext:
        return client_context(self.pki, workload)

    def user_token(self, sub: str = "alice", **claims: Any) -> str:
        return mint_token(
            key=load_private_key(self.pki.user_key),
            kid=self.pki.user_kid,
            issuer=self.pki.user_issuer,
            audience=self.pki.audience,
            subject=sub,
            claims=claims,
        )

    def device_token(self, workload: str = CHECKOUT, sub: str = "laptop-1", **claims: Any) -> str:
        cert = self.pki.workloads[workload][0].read_bytes()
        return mint_token(
            key=load_private_key(self.pki.device_key),
            kid=self.pki.device_kid,
            issuer=self.pki.device_issuer,
            audience=self.pki.audience,
            subject=sub,
            claims=claims,
            bind_cert=cert,
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        workload: str | None = CHECKOUT,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
    ) -> tuple[int, CIMultiDict[str], bytes]:
        self.sent += 1
        async with aiohttp.ClientSession() as s:
            async with s.request(
                method, self.url + path, headers=headers, data=data, ssl=self.ctx(workload)
            ) as r:
                return r.status, CIMultiDict(r.headers), await r.read()

    async def records(self, at_least: int | None = None) -> list[dict[str, Any]]:
        """The audit records on disk, waiting (up to 5 s) until the writer thread has
        written at least `at_least` request records (default: one per request sent)."""
        want = self.sent if at_least is None else at_least
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while True:
            recs = self.audit_records()
            if sum(r.get("kind") == "request" for r in recs) >= want or loop.time() > deadline:
                return recs
            await asyncio.sleep(0.02)

    def audit_records(self) -> list[dict[str, Any]]:
        out = []
        for f in sorted(self.audit_dir.rglob("w*-0*.jsonl")):  # segments, not checkpoints
            for line in f.read_text().splitlines():
                if line.strip():
                    out.append(json.loads(line))
        return out


async def raw_exchange(port: int, ctx: ssl.SSLContext, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes over TLS (no client library to normalize them); read the reply."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
    )
    writer.write(data)
    await writer.drain()
    chunks = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except (TimeoutError, ConnectionResetError, ssl.SSLError):
        pass
    writer.close()
    return b"".join(chunks)


StartProxy = Callable[..., Awaitable[Running]]


def open_route(upstream: str, **over: Any) -> dict[str, Any]:
    """A route that needs no user or device token (mTLS + policy only)."""
    route = {
        "name": "payments-api",
        "service": "payments",
        "path_prefix": "/payments",
        "upstream": upstream,
        "user": "none",
        "device": "none",
    }
    route.update(over)
    return route
