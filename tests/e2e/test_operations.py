"""Operations: the admin listener (health, readiness, metrics) and reload."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
import yaml
from e2e_harness import StartProxy, open_route

from ztproxy.config.load import load_config
from ztproxy.devtools.lab import proxy_config
from ztproxy.devtools.pki import DevCA, DevPki
from ztproxy.server import Proxy


async def test_health_ready_and_metrics(start_proxy: StartProxy, upstream: str) -> None:
    run = await start_proxy(routes=[open_route(upstream)])
    await run.request("GET", "/payments/x")
    await run.request("GET", "/payments/x", workload="reports")
    base = f"http://127.0.0.1:{run.proxy.admin_port}"
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/healthz") as r:
            assert r.status == 200
        async with s.get(base + "/readyz") as r:
            body = await r.json()
            assert r.status == 200 and body["ready"] is True
            assert set(body["components"]) >= {"tls", "identity", "policy", "audit"}
        async with s.get(base + "/metrics") as r:
            text = await r.text()
    assert (
        'ztproxy_requests_total{decision="allow",reason="policy_allow",route="payments-api"}'
        in text
    )
    assert (
        'ztproxy_requests_total{decision="deny",reason="policy_deny",route="payments-api"}' in text
    )
    assert "ztproxy_stage_seconds_bucket" in text


def _write(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


async def _get(port: int, ctx: ssl.SSLContext, path: str) -> int:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"https://localhost:{port}{path}", ssl=ctx) as r:
            await r.read()
            return r.status


async def _server_serial(port: int, ctx: ssl.SSLContext) -> str:
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
    )
    serial = writer.get_extra_info("ssl_object").getpeercert()["serialNumber"]
    writer.close()
    return str(serial)


async def test_reload_swaps_routes_and_server_cert_and_keeps_running_on_bad_config(
    pki: DevPki, tmp_path: Path, upstream: str, test_policy_dir: Path
) -> None:
    raw = proxy_config(
        pki,
        upstreams={},
        audit_dir=tmp_path / "audit",
        policy_dirs=[test_policy_dir],
        routes=[open_route(upstream)],
    )
    cfg_file = _write(tmp_path / "ztproxy.yaml", raw)
    proxy = Proxy(load_config(str(cfg_file)))
    await proxy.start()
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(*(str(p) for p in pki.workloads["checkout"]))
    try:
        assert await _get(proxy.port, ctx, "/reports/x") == 404
        # an open connection keeps working across the reload
        session = aiohttp.ClientSession()
        async with session.get(f"https://localhost:{proxy.port}/payments/x", ssl=ctx) as r:
            assert r.status == 200
        old_serial = await _server_serial(proxy.port, ctx)
        # new server certificate + a new route
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        ca = DevCA(
            cert=x509.load_pem_x509_certificate(pki.ca_cert.read_bytes()),
            key=serialization.load_pem_private_key(pki.ca_key.read_bytes(), None),
            cert_pem=pki.ca_cert.read_bytes(),
        )  # type: ignore[arg-type]
        cert, key = ca.issue_server().write(tmp_path, "server2")
        raw["listener"]["cert_file"], raw["listener"]["key_file"] = str(cert), str(key)
        raw["routes"].append(
            open_route(upstream, name="reports-api", service="reports", path_prefix="/reports")
        )
        _write(cfg_file, raw)
        assert await proxy.reload() is True
        assert await _get(proxy.port, ctx, "/reports/x") == 200
        async with session.get(f"https://localhost:{proxy.port}/payments/x", ssl=ctx) as r:
            assert r.status == 200  # the kept-alive connection carried on
        await session.close()
        assert await _server_serial(proxy.port, ctx) != old_serial
        # a broken config: reload refuses, everything keeps running
        raw["routes"][0]["upstream"] = "ftp://nope"
        _write(cfg_file, raw)
        assert await proxy.reload() is False
        assert await _get(proxy.port, ctx, "/reports/x") == 200
    finally:
        await proxy.stop()
