"""Stage 1: the TLS handshake, done by us so that every rejected handshake is seen.

An accept loop takes each TCP connection and runs the handshake with the current
listener context (client certificate required, verified by OpenSSL
against the CA bundle and CRL). On failure the handshake is audited as `tls_rejected`
with the peer address and OpenSSL's reason. On success the leaf certificate is checked
against the X.509-SVID rules; a certificate that fails them is audited with its
thumbprint and the connection is closed before any byte of HTTP is read. Only then is
the connection handed to aiohttp's request handler.

Validated identities are cached by DER bytes (bounded), so the request path looks a
connection's identity up without parsing the certificate again.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import OrderedDict
from collections.abc import Callable, Collection

import structlog

from ..model import PeerIdentity
from ..tls.spiffe import SvidError, peer_identity, thumbprints
from .rejections import RejectAggregator

log = structlog.get_logger("ztproxy.tls")


class PeerCache:
    """DER bytes -> PeerIdentity for certificates that passed the handshake checks."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._items: OrderedDict[bytes, PeerIdentity] = OrderedDict()
        self._max = max_entries

    def put(self, der: bytes, peer: PeerIdentity) -> None:
        self._items[der] = peer
        self._items.move_to_end(der)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    def __call__(self, der: bytes) -> PeerIdentity | None:
        return self._items.get(der)

    def clear(self) -> None:
        self._items.clear()


def handshake_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        msg = (exc.verify_message or "").lower()
        if "expired" in msg:
            return "client_cert_expired"
        if "not yet valid" in msg:
            return "client_cert_not_yet_valid"
        if "revoked" in msg:
            return "client_cert_revoked"
        return "client_cert_untrusted"
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        if "PEER_DID_NOT_RETURN_A_CERTIFICATE" in reason or "NO_CERTIFICATE" in reason:
            return "no_client_certificate"
        if "CERTIFICATE" in reason and ("UNKNOWN" in reason or "VERIFY" in reason):
            return "client_cert_untrusted"
        if "VERSION" in reason or "PROTOCOL" in reason:
            return "tls_protocol_refused"
        return "tls_handshake_failed"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "tls_handshake_timeout"
    return "tls_connection_lost"


class _Gate(asyncio.Protocol):
    """Holds what arrives between the end of the handshake and the SVID check, so no
    byte reaches the HTTP handler before the identity is accepted."""

    def __init__(self) -> None:
        self.buffer: list[bytes] = []
        self.eof = False
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.buffer.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


RejectFn = Callable[[str, str, "str | None", "str | None"], None]


class TLSListener:
    """Accepts TCP connections on a listening socket and runs each TLS handshake as
    its own task with `loop.connect_accepted_socket`, which raises when the handshake
    fails. (`start_tls` on an accepted transport races with uvloop, which may read
    the ClientHello before reading can be paused.) Each accepted connection is handed
    to `handler_factory()` only after its identity is accepted."""

    def __init__(self, sock: socket.socket, *, context: Callable[[], ssl.SSLContext],
                 handler_factory: Callable[[], asyncio.Protocol],
                 trust_domains: Callable[[], Collection[str]], peers: PeerCache,
                 on_reject: RejectFn, handshake_timeout: float) -> None:
        self.sock = sock
        self._context = context
        self._handler_factory = handler_factory
        self._trust_domains = trust_domains
        self._peers = peers
        self._rejects = RejectAggregator(on_reject)  # one record per source and interval
        self._on_reject: RejectFn = self._rejects
        self._timeout = handshake_timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.sock.setblocking(False)
        self._accepting = asyncio.get_running_loop().create_task(self._accept(),
                                                                 name="tls-accept")

    async def close(self) -> None:
        """Stop accepting and abandon handshakes in progress."""
        if self._accepting is not None:
            self._accepting.cancel()
            await asyncio.gather(self._accepting, return_exceptions=True)
        self.sock.close()
        self._rejects.flush()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, addr = await loop.sock_accept(self.sock)
            except OSError as exc:  # EMFILE and the like: keep serving, say so
                log.warning("accept_failed", error=type(exc).__name__)
                await asyncio.sleep(0.05)
                continue
            task = loop.create_task(self._handshake(conn, addr[0] if addr else ""),
                                    name="tls-handshake")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handshake(self, conn: socket.socket, address: str) -> None:
        gate = _Gate()
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: gate, conn, ssl=self._context(), ssl_handshake_timeout=self._timeout)
        except (TimeoutError, ssl.SSLError, OSError, ConnectionError, RuntimeError) as exc:
            self._on_reject(address, handshake_reason(exc), None, None)
            conn.close()
            return
        tls = transport
        ssl_object = tls.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            self._on_reject(address, "no_client_certificate", None, None)
            tls.abort()
            return
        if self._peers(der) is None:
            try:
                self._peers.put(der, peer_identity(der, self._trust_domains()))
            except SvidError as exc:
                self._on_reject(address, f"svid_{exc.reason}", thumbprints(der)[1], None)
                tls.abort()
                return
        if gate.lost:
            return
        handler = self._handler_factory()
        tls.set_protocol(handler)
        handler.connection_made(tls)
        if gate.buffer:
            handler.data_received(b"".join(gate.buffer))
        if gate.eof:
            handler.eof_received()


def listening_socket(address: str, port: int, *, reuse_port: bool,
                     backlog: int = 1024) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock
