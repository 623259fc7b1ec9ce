"""The real proxy fed by a signed OPA bundle from a real bundle server on 127.0.0.1:
`policy_revision` (manifest revision @ bundle SHA-256) in /readyz, in the audit record
and in the bundle metric; a tampered bundle refused on SIGHUP with the old policy
serving; a proxy whose bundle never arrived is up but not ready, and denies with 503."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from e2e_harness import TEST_POLICY, Running, open_route

from ztproxy.config.load import parse_config
from ztproxy.devtools.lab import proxy_config
from ztproxy.devtools.pki import DevPki
from ztproxy.policy.bundle.signing import sign_files
from ztproxy.server import Proxy

KEY = ec.generate_private_key(ec.SECP256R1())


def bundle(revision: str, policy: str = TEST_POLICY) -> bytes:
    files = [
        (".manifest", json.dumps({"revision": revision, "roots": ["ztproxy"]}).encode()),
        ("ztproxy/authz.rego", policy.encode()),
    ]
    files.append((".signatures.json", sign_files(files, KEY, "ES256", "ci")))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, content in files:
            info = tarfile.TarInfo("/" + name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(buf.getvalue(), mtime=0)


class Server:
    def __init__(self) -> None:
        self.raw = b""
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _get(self, request: web.Request) -> web.Response:
        etag = '"' + hashlib.sha256(self.raw).hexdigest()[:20] + '"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304)
        return web.Response(body=self.raw, headers={"ETag": etag})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/b.tar.gz", self._get)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/b.tar.gz"


@pytest.fixture
async def bundle_server() -> AsyncIterator[Server]:
    s = Server()
    await s.start()
    yield s
    assert s.runner is not None
    await s.runner.cleanup()


async def _start(pki: DevPki, tmp_path: Path, upstream: str, url: str) -> Running:
    pub = tmp_path / "ci.pub.pem"
    pub.write_bytes(
        KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    raw = proxy_config(
        pki, upstreams={}, audit_dir=tmp_path / "audit", routes=[open_route(upstream)]
    )
    raw["policy"] = {
        "engine": "embedded",
        "watch": False,
        "bundle": {
            "url": url,
            "poll_min_seconds": 3600,
            "poll_max_seconds": 3600,
            "persist_dir": str(tmp_path / "bundle"),
            "keys": {"ci": {"key_file": str(pub), "algorithm": "ES256"}},
        },
    }
    config = parse_config(raw, str(tmp_path))
    proxy = Proxy(config)
    await proxy.start()
    return Running(proxy, config, pki, tmp_path / "audit")


async def _admin(run: Running, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{run.proxy.admin_port}{path}") as r:
            body = await (r.json() if path == "/readyz" else r.text())
            return r.status, body


async def test_bundle_revision_in_readyz_audit_and_metrics_and_tamper_kept_out(
    pki: DevPki, tmp_path: Path, upstream: str, bundle_server: Server
) -> None:
    bundle_server.raw = bundle("r1")
    r1 = "r1@sha256:" + hashlib.sha256(bundle_server.raw).hexdigest()
    run = await _start(pki, tmp_path, upstream, bundle_server.url)
    try:
        status, ready = await _admin(run, "/readyz")
        assert status == 200 and ready["ready"] is True and ready["policy_revision"] == r1
        assert (await run.request("GET", "/payments/x"))[0] == 200
        records = [r for r in await run.records() if r.get("kind") == "request"]
        assert records[-1]["policy_revision"] == r1
        # a tampered bundle: refused, the old policy keeps serving, still ready
        # (a module swapped after signing: digest mismatch)
        tampered = _swap_module(bundle("r1-evil"), TEST_POLICY.replace("checkout", "reports"))
        bundle_server.raw = tampered
        assert await run.proxy.reload()
        status, ready = await _admin(run, "/readyz")
        assert status == 200 and ready["policy_revision"] == r1
        assert (await run.request("GET", "/payments/x"))[0] == 200
        _, metrics = await _admin(run, "/metrics")
        assert 'ztproxy_policy_bundle_failures_total{reason="digest_mismatch"} 1.0' in metrics
        assert f'ztproxy_policy_bundle_info{{policy_revision="{r1}"}} 1.0' in metrics
        # a new good revision: swapped in on the next poll (SIGHUP polls at once)
        bundle_server.raw = bundle("r2")
        assert await run.proxy.reload()
        _, ready = await _admin(run, "/readyz")
        assert ready["policy_revision"].startswith("r2@sha256:")
        await run.request("GET", "/payments/y")
        records = [r for r in await run.records() if r.get("kind") == "request"]
        assert records[-1]["policy_revision"] == ready["policy_revision"]
    finally:
        await run.proxy.stop()


def _swap_module(raw: bytes, policy: str) -> bytes:
    src = tarfile.open(fileobj=io.BytesIO(gzip.decompress(raw)))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info in src.getmembers():
            fh = src.extractfile(info)
            content = fh.read() if fh is not None else b""
            if info.name.endswith(".rego"):
                content = policy.encode()
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(buf.getvalue(), mtime=0)


async def test_no_bundle_yet_means_up_not_ready_and_503(
    pki: DevPki, tmp_path: Path, upstream: str, bundle_server: Server
) -> None:
    bundle_server.raw = b"not a bundle"
    run = await _start(pki, tmp_path, upstream, bundle_server.url)
    try:
        status, ready = await _admin(run, "/readyz")
        assert ready["ready"] is False and ready["components"]["policy"]["policy_loaded"] is False
        assert status != 200
        assert (await run.request("GET", "/payments/x"))[0] == 503
        _, metrics = await _admin(run, "/metrics")
        assert 'ztproxy_policy_bundle_failures_total{reason="archive_truncated"}' in metrics
    finally:
        await run.proxy.stop()
