"""Review of issue 12: a keep-alive connection whose certificate a reload's new CRL
revokes (the issue pins only the other direction: a keep-alive request after a reload
that changes nothing still answers 200). Its next request is decided against the new
trust store: 401 `client_cert_revoked`, the connection closed, no upstream request;
and a new handshake with the same certificate is refused, even though the old runtime's
handshake memo had that chain as valid."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

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


async def test_keepalive_connection_after_reload_revoking_its_cert(
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
        routes=[open_route(upstream)],
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

    async def on_conn(*_: Any) -> None:
        opened.append(1)

    trace.on_connection_create_end.append(on_conn)
    url = f"https://localhost:{proxy.port}/payments/x"
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1), trace_configs=[trace]
        ) as s:
            async with s.get(url, ssl=ctx) as r:
                assert r.status == 200
            crl.write_bytes(ca.crl([leaf]))
            assert await proxy.reload() is True
            async with s.get(url, ssl=ctx) as r:
                assert r.status == 401
                assert len(opened) == 1  # the same connection, judged by the new CRL
            try:
                async with s.get(url, ssl=ctx) as r:
                    status: int | None = r.status
            except (aiohttp.ClientError, OSError, ssl.SSLError):
                status = None
            assert status is None  # a new handshake is refused too
    finally:
        await proxy.stop()
    recs = [
        json.loads(line)
        for f in sorted((tmp_path / "audit").rglob("*.jsonl"))
        for line in f.read_text().splitlines()
        if line.strip()
    ]
    requests = [r["reason"] for r in recs if r.get("kind") == "request"]
    assert requests == ["policy_allow", "client_cert_revoked"]
    assert "client_cert_revoked" in [r["reason"] for r in recs if r.get("kind") == "tls_rejected"]
