"""Real TLS over loopback: a server context built from the dev PKI's server.pem requires a client
certificate chained to ca.pem; workload SVIDs pass, strangers and anonymous clients do not."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ztproxy.devtools.mint import x5t_s256
from ztproxy.devtools.pki import DevCA, DevPki

TIMEOUT = 5.0


@pytest.fixture
async def tls_server(dev_pki: DevPki) -> AsyncIterator[tuple[int, list[bytes]]]:
    """Echo server: answers each connection with the x5t#S256 of the peer's certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(dev_pki.ca_cert))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(dev_pki.server_cert, dev_pki.server_key)
    peers: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        peers.append(der)
        writer.write(x5t_s256(der).encode() + b"\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, peers
    finally:
        server.close()
        await server.wait_closed()


def _client_ctx(ca_cert: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_cert))
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


async def _exchange(port: int, ctx: ssl.SSLContext, host: str = "localhost") -> bytes:
    async def go() -> bytes:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname=host
        )
        try:
            return await reader.readline()
        finally:
            writer.close()

    return await asyncio.wait_for(go(), TIMEOUT)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_workload_svid_completes_mutual_tls(
    tls_server: tuple[int, list[bytes]], dev_pki: DevPki, host: str
) -> None:
    port, peers = tls_server
    cert, key = dev_pki.workloads["checkout"]
    line = await _exchange(port, _client_ctx(dev_pki.ca_cert, cert, key), host)
    assert line.decode().strip() == x5t_s256(cert.read_bytes())
    assert len(peers) == 1


async def _rejected(port: int, ctx: ssl.SSLContext) -> None:
    try:
        line = await _exchange(port, ctx)
    except (ssl.SSLError, ConnectionError):
        return  # TLS 1.2 fails in the handshake; TLS 1.3 fails on the first read with an alert
    assert line == b"", "the server answered a client it should have rejected"


async def test_client_without_certificate_is_rejected(
    tls_server: tuple[int, list[bytes]], dev_pki: DevPki
) -> None:
    port, peers = tls_server
    await _rejected(port, _client_ctx(dev_pki.ca_cert))
    assert peers == []


async def test_client_from_another_ca_is_rejected(
    tls_server: tuple[int, list[bytes]], dev_pki: DevPki, other_ca: DevCA, tmp_path: Path
) -> None:
    port, peers = tls_server
    cert, key = other_ca.issue_workload("spiffe://corp.example/ns/prod/sa/checkout").write(
        tmp_path, "stranger"
    )
    await _rejected(port, _client_ctx(dev_pki.ca_cert, cert, key))
    assert peers == []


async def test_server_certificate_is_checked_by_the_client(
    tls_server: tuple[int, list[bytes]], dev_pki: DevPki, other_ca: DevCA, tmp_path: Path
) -> None:
    port, _ = tls_server
    other_ca.write(tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        await _exchange(port, _client_ctx(tmp_path / "ca.pem", *dev_pki.workloads["checkout"]))
    with pytest.raises(ssl.SSLCertVerificationError):
        await _exchange(
            port,
            _client_ctx(dev_pki.ca_cert, *dev_pki.workloads["checkout"]),
            host="not-localhost.example",
        )


async def test_intermediate_issued_svid_presents_its_chain(tmp_path: Path) -> None:
    root = DevCA.create()
    inter = root.issue_intermediate("dev intermediate")
    root_ca, _ = root.write(tmp_path)
    server_cert, server_key = root.issue_server().write(tmp_path, "server")
    client_cert, client_key = inter.issue_workload("spiffe://corp.example/ns/prod/sa/x").write(
        tmp_path, "client"
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(root_ca))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(server_cert, server_key)
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("ssl_object").getpeercert(binary_form=True))
        writer.write(b"ok\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    try:
        port = server.sockets[0].getsockname()[1]
        line = await _exchange(port, _client_ctx(root_ca, client_cert, client_key))
    finally:
        server.close()
        await server.wait_closed()
    assert line == b"ok\n"
    assert x5t_s256(seen[0]) == x5t_s256(client_cert.read_bytes())
