"""Review of issue 12: a WebSocket is the longest-lived connection there is. Its
workload identity was checked once, at the upgrade; a reload whose CRL revokes the
certificate, or the certificate's expiry, must not leave the relay open (the issue:
"re-validate the stored peer certificate's validity (and CRL status) ... on every
request of a long-lived connection"; a WebSocket never sends another request). On the
merged code both relays kept running."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from e2e_harness import open_route

from ztproxy.config.load import load_config
from ztproxy.devtools.lab import proxy_config
from ztproxy.devtools.pki import DevCA, DevPki
from ztproxy.server import Proxy

CHECKOUT = "spiffe://corp.example/ns/prod/sa/checkout"


async def test_websocket_closed_when_a_reload_revokes_its_certificate(
    pki: DevPki, tmp_path: Path, upstream: str, test_policy_dir: Path
) -> None:
    cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    ca = DevCA(cert=cert, key=key, cert_pem=pki.ca_cert.read_bytes())  # type: ignore[arg-type]
    leaf = ca.issue_workload(CHECKOUT)
    certfile, keyfile = leaf.write(tmp_path, "leaf")
    crl = tmp_path / "crl.pem"
    crl.write_bytes(ca.crl([]))
    raw = proxy_config(
        pki,
        upstreams={},
        audit_dir=tmp_path / "audit",
        policy_dirs=[test_policy_dir],
        routes=[open_route(upstream, path_prefix="/")],
        extra={
            "trust_domains": [
                {"name": "corp.example", "bundle_file": str(pki.ca_cert), "crl_file": str(crl)}
            ]
        },
    )
    cfg = tmp_path / "z.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    proxy = Proxy(load_config(str(cfg)))
    await proxy.start()
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(certfile), str(keyfile))
    try:
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"wss://localhost:{proxy.port}/ws", ssl=ctx) as ws:
                await ws.send_str("before")
                assert (await ws.receive_str()) == "payments:before"
                crl.write_bytes(ca.crl([leaf]))
                assert await proxy.reload() is True
                got: list[str] = []
                try:
                    await ws.send_str("after")
                    msg = await asyncio.wait_for(ws.receive(), 10)
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        got.append(msg.data)
                except (aiohttp.ClientError, ConnectionError):
                    pass
                assert got == []  # nothing relayed for a revoked certificate
    finally:
        await proxy.stop()
    recs = [
        json.loads(line)
        for f in sorted((tmp_path / "audit").rglob("*.jsonl"))
        for line in f.read_text().splitlines()
        if line.strip()
    ]
    assert "client_cert_revoked" in [r.get("reason") for r in recs]


async def test_websocket_closed_when_its_certificate_expires(
    pki: DevPki, tmp_path: Path, upstream: str, test_policy_dir: Path
) -> None:
    cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    ca = DevCA(cert=cert, key=key, cert_pem=pki.ca_cert.read_bytes())  # type: ignore[arg-type]
    expires = int(time.time()) + 2
    leaf = ca.issue_workload(
        CHECKOUT,
        not_before=datetime.now(UTC) - timedelta(minutes=1),
        not_after=datetime.fromtimestamp(expires, UTC),
    )
    certfile, keyfile = leaf.write(tmp_path, "leaf")
    raw = proxy_config(
        pki,
        upstreams={},
        audit_dir=tmp_path / "audit",
        policy_dirs=[test_policy_dir],
        routes=[open_route(upstream, path_prefix="/")],
    )
    cfg = tmp_path / "z.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    proxy = Proxy(load_config(str(cfg)))
    await proxy.start()
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(certfile), str(keyfile))
    try:
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"wss://localhost:{proxy.port}/ws", ssl=ctx) as ws:
                await ws.send_str("before")
                assert (await ws.receive_str()) == "payments:before"
                # the proxy closes the relay by itself once the certificate has expired
                msg = await asyncio.wait_for(ws.receive(), 15)
                assert msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.ERROR,
                )
                assert time.time() > expires  # not before it expired
    finally:
        await proxy.stop()
    # Two mechanisms close it, whichever comes first: the session's own deadline (the
    # earliest token exp / certificate notAfter: close 1008, stages/websocket.py) and the
    # listener's identity sweep one second after notAfter (tls_rejected `expired`). The
    # deadline fires first; the relay's request record is the 101 it was.
    recs = [
        json.loads(line)
        for f in sorted((tmp_path / "audit").rglob("w*-0*.jsonl"))
        for line in f.read_text().splitlines()
        if line.strip()
    ]
    assert [r["status"] for r in recs if r.get("path") == "/ws"] == [101]


async def test_websocket_on_a_kept_alive_connection_meets_the_new_crls_next_update(
    pki: DevPki, tmp_path: Path, upstream: str, test_policy_dir: Path
) -> None:
    """The connection was idle at the reload; the WebSocket that starts on it afterwards
    is validated under the new CRL, whose nextUpdate is 2 s away: when it passes (the
    CRL is stale: `crl_expired`), the relay is closed."""
    cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    ca = DevCA(cert=cert, key=key, cert_pem=pki.ca_cert.read_bytes())  # type: ignore[arg-type]
    leaf = ca.issue_workload(CHECKOUT)
    certfile, keyfile = leaf.write(tmp_path, "leaf")
    crl = tmp_path / "crl.pem"
    crl.write_bytes(ca.crl([]))
    raw = proxy_config(
        pki,
        upstreams={},
        audit_dir=tmp_path / "audit",
        policy_dirs=[test_policy_dir],
        routes=[open_route(upstream, path_prefix="/")],
        extra={
            "trust_domains": [
                {"name": "corp.example", "bundle_file": str(pki.ca_cert), "crl_file": str(crl)}
            ]
        },
    )
    cfg = tmp_path / "z.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    proxy = Proxy(load_config(str(cfg)))
    await proxy.start()
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(certfile), str(keyfile))
    opened: list[object] = []
    trace = aiohttp.TraceConfig()

    async def on_conn(*_: object) -> None:
        opened.append(1)

    trace.on_connection_create_end.append(on_conn)
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1), trace_configs=[trace]
        ) as s:
            async with s.get(f"https://localhost:{proxy.port}/x", ssl=ctx) as r:
                assert r.status == 200
            next_update = int(time.time()) + 2
            crl.write_bytes(
                ca.crl([], now=datetime.fromtimestamp(next_update, UTC) - timedelta(days=1))
            )
            assert await proxy.reload() is True
            async with s.ws_connect(f"wss://localhost:{proxy.port}/ws", ssl=ctx) as ws:
                assert len(opened) == 1  # the same connection, idle at the reload
                await ws.send_str("before")
                assert (await ws.receive_str()) == "payments:before"
                msg = await asyncio.wait_for(ws.receive(), 15)
                assert msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.ERROR,
                )
                assert time.time() > next_update
    finally:
        await proxy.stop()
    recs = [
        json.loads(line)
        for f in sorted((tmp_path / "audit").rglob("*.jsonl"))
        for line in f.read_text().splitlines()
        if line.strip()
    ]
    assert "crl_expired" in [r.get("reason") for r in recs]
