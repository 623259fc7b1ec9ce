"""Workload identity that holds (issue 12): the whole X.509-SVID chain, one bundle per
trust domain, CRLs for every certificate of the chain, no resumed shortcut, and a reload
that neither breaks live connections nor lets a handshake in under the old trust store.

Each test replays one finding over real TLS on loopback against the real proxy, and
would pass the attack (or fail the keep-alive) on the old code."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from e2e_harness import Running, StartProxy, open_route

from ztproxy.config.load import load_config
from ztproxy.devtools.lab import proxy_config
from ztproxy.devtools.pki import DevCA, DevPki, Issued
from ztproxy.server import Proxy

CHECKOUT = "spiffe://corp.example/ns/prod/sa/checkout"


def _dev_ca(pki: DevPki) -> DevCA:
    cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    return DevCA(cert=cert, key=key, cert_pem=pki.ca_cert.read_bytes())  # type: ignore[arg-type]


def _client(
    pki: DevPki,
    tmp: Path,
    issued: Issued,
    name: str = "client",
    *,
    version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    cert, key = issued.write(tmp, name)  # leaf, then the intermediates it presents
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(cert), str(key))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def _as_ca(issued: Issued) -> DevCA:
    """A CA:TRUE certificate used as an issuer (what the attacker does with it)."""
    return DevCA(
        cert=issued.cert,
        key=issued.key,
        cert_pem=issued.cert_pem,  # type: ignore[arg-type]
        leaf_chain=(issued.cert, *issued.chain),
    )


async def _status(run_port: int, ctx: ssl.SSLContext, path: str = "/payments/x") -> int | None:
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"https://localhost:{run_port}{path}", ssl=ctx) as r:
                await r.read()
                return r.status
    except (aiohttp.ClientError, OSError, ssl.SSLError):
        return None


def _tls_reasons(run: Running | Path) -> list[str]:
    audit_dir = run if isinstance(run, Path) else run.audit_dir
    out = []
    import json

    for f in sorted(audit_dir.rglob("*.jsonl")):
        for line in f.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                if rec.get("kind") == "tls_rejected":
                    out.append(rec["reason"])
    return out


async def _wait_reasons(run: Running | Path, count: int = 1) -> list[str]:
    """The `tls_rejected` reasons so far (a client may retry a refused GET once: one
    record per handshake)."""
    for _ in range(200):
        reasons = _tls_reasons(run)
        if len(reasons) >= count:
            return reasons
        await asyncio.sleep(0.025)
    return _tls_reasons(run)


# -- 1. a CA:TRUE workload certificate mints a grandchild --------------------------------
async def test_grandchild_of_ca_true_workload_cert_refused(
    start_proxy: StartProxy, upstream: str, pki: DevPki, tmp_path: Path
) -> None:
    run = await start_proxy(routes=[open_route(upstream)])
    web = _dev_ca(pki).issue_workload(
        "spiffe://corp.example/ns/prod/sa/web", is_ca=True, key_usage_cert_sign=True
    )
    grandchild = _as_ca(web).issue_workload(CHECKOUT)  # the identity the policy allows
    assert await _status(run.proxy.port, _client(pki, tmp_path, grandchild)) is None
    assert set(await _wait_reasons(run)) == {"chain_ca_with_spiffe_path"}
    assert not [r for r in run.audit_records() if r.get("kind") == "request"]


# -- 2. a federated partner's CA mints a corp ID -----------------------------------------
async def test_cross_trust_domain_mint_refused(
    start_proxy: StartProxy, upstream: str, pki: DevPki, tmp_path: Path
) -> None:
    partner = DevCA.create("partner CA")
    partner_bundle = tmp_path / "partner.pem"
    partner_bundle.write_bytes(partner.cert_pem)
    trust = [
        {"name": "corp.example", "bundle_file": str(pki.ca_cert)},
        {"name": "partner.example", "bundle_file": str(partner_bundle)},
    ]
    run = await start_proxy(routes=[open_route(upstream)], extra={"trust_domains": trust})
    forged = partner.issue_workload(CHECKOUT)
    assert await _status(run.proxy.port, _client(pki, tmp_path, forged)) is None
    assert set(await _wait_reasons(run)) == {"trust_domain_bundle_mismatch"}
    # the partner's own workloads still get in (and meet the policy, which denies them)
    own = partner.issue_workload("spiffe://partner.example/ns/prod/sa/billing")
    assert await _status(run.proxy.port, _client(pki, tmp_path, own, "own")) == 403
    # and corp's own CA still works for corp
    assert await _status(run.proxy.port, run.ctx()) == 200


# -- 3. an expired certificate over a resumed session, and on a keep-alive connection ----
def _short_lived(pki: DevPki, seconds: int = 2) -> tuple[Issued, float]:
    now = int(time.time())
    end = datetime.fromtimestamp(now + seconds, UTC)
    leaf = _dev_ca(pki).issue_workload(
        CHECKOUT, not_before=datetime.now(UTC) - timedelta(minutes=1), not_after=end
    )
    return leaf, float(now + seconds)


async def _until(instant: float) -> None:
    while time.time() <= instant + 1.05:  # X.509 times have whole seconds; OpenSSL: >
        await asyncio.sleep(0.1)


def _get_over(
    port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None
) -> tuple[bytes, ssl.SSLSession | None, bool]:
    """One GET over a blocking TLS socket offering `session` for resumption."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        tls = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    except (ssl.SSLError, OSError):
        raw.close()
        return b"", None, False
    try:
        tls.sendall(b"GET /payments/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    except (ssl.SSLError, OSError):
        data = b""
    reused = tls.session_reused
    new_session = tls.session
    tls.close()
    return data, new_session, reused


async def _resumed_expiry(
    start_proxy: StartProxy, upstream: str, pki: DevPki, tmp_path: Path, version: ssl.TLSVersion
) -> None:
    run = await start_proxy(routes=[open_route(upstream)])
    leaf, expires = _short_lived(pki)
    ctx = _client(pki, tmp_path, leaf, version=version)
    first, session, _ = await asyncio.to_thread(_get_over, run.proxy.port, ctx, None)
    assert first.startswith(b"HTTP/1.1 200")
    second, session2, reused = await asyncio.to_thread(_get_over, run.proxy.port, ctx, session)
    assert not reused  # no ticket, no session cache: every handshake is a full one
    await _until(expires)
    third, _, reused = await asyncio.to_thread(_get_over, run.proxy.port, ctx, session2 or session)
    assert not reused
    assert not third.startswith(b"HTTP/1.1 200")
    assert "expired" in await _wait_reasons(run)


async def test_expired_cert_over_resumed_session_tls12(
    start_proxy: StartProxy, upstream: str, pki: DevPki, tmp_path: Path
) -> None:
    await _resumed_expiry(start_proxy, upstream, pki, tmp_path, ssl.TLSVersion.TLSv1_2)


async def test_expired_cert_over_resumed_session_tls13(
    start_proxy: StartProxy, upstream: str, pki: DevPki, tmp_path: Path
) -> None:
    await _resumed_expiry(start_proxy, upstream, pki, tmp_path, ssl.TLSVersion.TLSv1_3)


async def test_expired_cert_on_keepalive_connection_refused(
    start_proxy: StartProxy, upstream: str, pki: DevPki, tmp_path: Path
) -> None:
    run = await start_proxy(routes=[open_route(upstream)])
    leaf, expires = _short_lived(pki)
    ctx = _client(pki, tmp_path, leaf)
    opened: list[object] = []
    trace = aiohttp.TraceConfig()

    async def on_conn(*_: Any) -> None:
        opened.append(1)

    trace.on_connection_create_end.append(on_conn)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1), trace_configs=[trace]
    ) as s:
        async with s.get(f"https://localhost:{run.proxy.port}/payments/x", ssl=ctx) as r:
            assert r.status == 200
        await _until(expires)
        async with s.get(f"https://localhost:{run.proxy.port}/payments/x", ssl=ctx) as r:
            assert r.status == 401
            assert len(opened) == 1  # the same connection: its identity was checked again
        assert await _status(run.proxy.port, ctx) is None  # and no new handshake passes
    recs = await run.records(2)
    assert [r["reason"] for r in recs if r.get("kind") == "request"] == ["policy_allow", "expired"]


# -- 4. a SPIFFE ID over 2048 bytes ---------------------------------------------------------
async def test_spiffe_id_2049_bytes_refused(
    start_proxy: StartProxy, upstream: str, pki: DevPki, tmp_path: Path
) -> None:
    run = await start_proxy(routes=[open_route(upstream)])
    base = "spiffe://corp.example/ns/prod/sa/"
    at_cap = _dev_ca(pki).issue_workload(base + "a" * (2048 - len(base)))
    over = _dev_ca(pki).issue_workload(base + "a" * (2049 - len(base)))
    assert await _status(run.proxy.port, _client(pki, tmp_path, at_cap, "cap")) == 403
    assert await _status(run.proxy.port, _client(pki, tmp_path, over, "over")) is None
    assert set(await _wait_reasons(run)) == {"spiffe_id_too_long"}


# -- 5. a revoked intermediate --------------------------------------------------------------
async def test_revoked_intermediate_refused(
    start_proxy: StartProxy, upstream: str, pki: DevPki, tmp_path: Path
) -> None:
    root = _dev_ca(pki)
    inter = root.issue_intermediate("workload issuing CA")
    leaf = inter.issue_workload(CHECKOUT)
    crl = tmp_path / "crl.pem"
    crl.write_bytes(root.crl([inter.cert]) + inter.crl([]))
    trust = [{"name": "corp.example", "bundle_file": str(pki.ca_cert), "crl_file": str(crl)}]
    run = await start_proxy(routes=[open_route(upstream)], extra={"trust_domains": trust})
    assert await _status(run.proxy.port, _client(pki, tmp_path, leaf)) is None
    assert set(await _wait_reasons(run)) == {"intermediate_revoked"}


async def test_intermediate_chain_accepted_and_crl_per_issuer(
    start_proxy: StartProxy, upstream: str, pki: DevPki, tmp_path: Path
) -> None:
    root = _dev_ca(pki)
    inter = root.issue_intermediate("workload issuing CA")
    good, revoked = inter.issue_workload(CHECKOUT), inter.issue_workload(CHECKOUT)
    crl = tmp_path / "crl.pem"
    crl.write_bytes(root.crl([]) + inter.crl([revoked]))
    trust = [{"name": "corp.example", "bundle_file": str(pki.ca_cert), "crl_file": str(crl)}]
    run = await start_proxy(routes=[open_route(upstream)], extra={"trust_domains": trust})
    assert await _status(run.proxy.port, _client(pki, tmp_path, good)) == 200
    assert await _status(run.proxy.port, _client(pki, tmp_path, revoked, "r")) is None
    assert set(await _wait_reasons(run)) == {"client_cert_revoked"}
    # a chain whose intermediate has no CRL in the file fails closed
    other = root.issue_intermediate("another issuing CA").issue_workload(CHECKOUT)
    assert await _status(run.proxy.port, _client(pki, tmp_path, other, "o")) is None
    assert (await _wait_reasons(run, 3))[-1] == "crl_missing"


# -- 6. reload: live connections keep working, held handshakes take the new CRL -----------
async def test_keepalive_request_after_reload_still_200(
    start_proxy: StartProxy, upstream: str, pki: DevPki
) -> None:
    run = await start_proxy(routes=[open_route(upstream)])
    opened: list[object] = []
    trace = aiohttp.TraceConfig()

    async def on_conn(*_: Any) -> None:
        opened.append(1)

    trace.on_connection_create_end.append(on_conn)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1), trace_configs=[trace]
    ) as s:
        url, ctx = f"https://localhost:{run.proxy.port}/payments/x", run.ctx()
        async with s.get(url, ssl=ctx) as r:
            assert r.status == 200
        for _ in range(2):
            assert await run.proxy.reload() is True
            async with s.get(url, ssl=ctx) as r:
                assert r.status == 200
    assert len(opened) == 1


def _write_config(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


async def test_handshake_across_reload_under_new_crl(
    pki: DevPki, tmp_path: Path, upstream: str, test_policy_dir: Path
) -> None:
    ca = _dev_ca(pki)
    leaf = ca.issue_workload(CHECKOUT)
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
    proxy = Proxy(load_config(str(_write_config(tmp_path / "z.yaml", raw))))
    await proxy.start()
    try:
        ctx = _client(pki, tmp_path, leaf)
        assert await _status(proxy.port, ctx) == 200
        # a TCP connection the proxy has accepted, its handshake not yet begun
        sock = socket.create_connection(("127.0.0.1", proxy.port))
        listener = proxy._listener
        assert listener is not None
        for _ in range(200):
            if listener._tasks:
                break
            await asyncio.sleep(0.01)
        crl.write_bytes(ca.crl([leaf]))
        assert await proxy.reload() is True
        sock.setblocking(False)
        status: int | None = None
        try:
            reader, writer = await asyncio.open_connection(
                sock=sock, ssl=ctx, server_hostname="localhost"
            )
            writer.write(
                b"GET /payments/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            data = await asyncio.wait_for(reader.read(), 5)
            status = int(data.split()[1]) if data else None
            writer.close()
        except (ssl.SSLError, OSError):
            pass
        assert status is None
        assert await _wait_reasons(tmp_path / "audit") == ["client_cert_revoked"]
        assert await _status(proxy.port, ctx) is None  # and every later handshake
    finally:
        await proxy.stop()


async def test_reload_with_broken_bundle_changes_nothing(
    pki: DevPki, tmp_path: Path, upstream: str, test_policy_dir: Path
) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pki.ca_cert.read_bytes())
    raw = proxy_config(
        pki,
        upstreams={},
        audit_dir=tmp_path / "audit",
        policy_dirs=[test_policy_dir],
        routes=[open_route(upstream)],
        extra={"trust_domains": [{"name": "corp.example", "bundle_file": str(bundle)}]},
    )
    cfg = _write_config(tmp_path / "z.yaml", raw)
    proxy = Proxy(load_config(str(cfg)))
    await proxy.start()
    try:
        assert proxy.runtime is not None
        before = proxy.runtime.current
        bundle.write_text("not a bundle")
        raw["routes"].append(
            open_route(upstream, name="reports-api", service="reports", path_prefix="/reports")
        )
        _write_config(cfg, raw)
        assert await proxy.reload() is False
        assert proxy.runtime.current is before  # not one part swapped
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.load_cert_chain(*(str(p) for p in pki.workloads["checkout"]))
        assert await _status(proxy.port, ctx) == 200
        assert await _status(proxy.port, ctx, "/reports/x") == 404
    finally:
        await proxy.stop()
