"""TLS and mutual TLS towards the upstream, per route."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from e2e_harness import StartProxy, open_route

from ztproxy.devtools.lab import start_app, upstream_app
from ztproxy.devtools.pki import DevCA, DevPki


def _ca(pki: DevPki) -> DevCA:
    return DevCA(
        cert=x509.load_pem_x509_certificate(pki.ca_cert.read_bytes()),
        key=serialization.load_pem_private_key(pki.ca_key.read_bytes(), None),
        cert_pem=pki.ca_cert.read_bytes(),
    )  # type: ignore[arg-type]


async def test_mtls_to_the_upstream(start_proxy: StartProxy, pki: DevPki, tmp_path: Path) -> None:
    ca = _ca(pki)
    server_cert, server_key = ca.issue_server(("127.0.0.1",)).write(tmp_path, "up")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(server_cert), str(server_key))
    ctx.verify_mode = ssl.CERT_REQUIRED  # the upstream insists on the proxy's certificate
    runner, port = await start_app(upstream_app("payments"), ssl_context=ctx)
    proxy_cert, proxy_key = ca.issue_workload("spiffe://corp.example/ns/prod/sa/ztproxy").write(
        tmp_path, "proxy-client"
    )
    try:
        url = f"https://127.0.0.1:{port}"
        run = await start_proxy(
            routes=[
                open_route(
                    url,
                    upstream_ca_file=str(pki.ca_cert),
                    upstream_cert_file=str(proxy_cert),
                    upstream_key_file=str(proxy_key),
                )
            ]
        )
        status, _, body = await run.request("GET", "/payments/x")
        assert status == 200 and json.loads(body)["service"] == "payments"
        await run.proxy.stop()
        # without the client certificate the upstream refuses: 502, never a bypass
        run = await start_proxy(routes=[open_route(url, upstream_ca_file=str(pki.ca_cert))])
        status, _, _ = await run.request("GET", "/payments/x")
        assert status == 502
        # an upstream certificate from an unknown CA: 502 upstream_tls_error
        other = DevCA.create("elsewhere")
        (tmp_path / "other.pem").write_bytes(other.cert_pem)
        await run.proxy.stop()
        run = await start_proxy(
            routes=[open_route(url, upstream_ca_file=str(tmp_path / "other.pem"))]
        )
        status, _, _ = await run.request("GET", "/payments/x")
        assert status == 502
        assert (await run.records())[-1]["reason"] == "upstream_tls_error"
    finally:
        await runner.cleanup()
