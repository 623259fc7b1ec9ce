"""Review of issue 12: TLS 1.2 session-ID resumption when the ctypes switch-off of the
server session cache is not available (a statically linked OpenSSL, another Python
build): the acceptor's `session_reused` backstop must still refuse the resumed session,
on both event loops. And, with the switch-off in place, this build really has it."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest
from e2e_harness import StartProxy, open_route

from ztproxy.devtools.lab import client_context
from ztproxy.devtools.pki import DevPki
from ztproxy.tls import context as tls_context

CHECKOUT = "checkout"


def _get(
    port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None
) -> tuple[bytes, ssl.SSLSession | None, bool]:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        tls = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    except (ssl.SSLError, OSError):
        raw.close()
        return b"", None, False
    data = b""
    try:
        tls.sendall(b"GET /payments/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        while chunk := tls.recv(65536):
            data += chunk
    except (ssl.SSLError, OSError):
        pass
    reused, sess = tls.session_reused, tls.session
    tls.close()
    return data, sess, reused


async def test_tls12_session_id_resumption_refused_without_cache_switch_off(
    start_proxy: StartProxy, upstream: str, pki: DevPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tls_context, "disable_session_cache", lambda ctx: False)
    run = await start_proxy(routes=[open_route(upstream)])
    ctx = client_context(pki, CHECKOUT)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    first, session, _ = await asyncio.to_thread(_get, run.proxy.port, ctx, None)
    assert first.startswith(b"HTTP/1.1 200")
    second, _, reused = await asyncio.to_thread(_get, run.proxy.port, ctx, session)
    assert reused  # the server cache is on here: OpenSSL resumed the session ...
    assert not second.startswith(b"HTTP/1.1 200")  # ... and the acceptor refused it
    for _ in range(200):
        reasons = [r["reason"] for r in run.audit_records() if r.get("kind") == "tls_rejected"]
        if reasons:
            break
        await asyncio.sleep(0.025)
    assert reasons == ["session_resumption_refused"]


def test_session_cache_switched_off_on_this_build(pki: DevPki) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    assert tls_context.disable_session_cache(ctx) is True
    assert tls_context.disable_session_cache(ctx) is True  # idempotent: reads back 0
