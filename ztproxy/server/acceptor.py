"""Stage 1: the TLS handshake, done by us so that every rejected handshake is seen.

An accept loop takes each TCP connection and runs the handshake with the CURRENT
runtime's listener context (client certificate required; OpenSSL builds and verifies the
chain against the union of the trust bundles). On failure the handshake is audited as
`tls_rejected` with the peer address and the reason. On success the chain OpenSSL
verified is validated as an X.509-SVID chain of the trust domain the leaf names, against
the trust store of the runtime current at the END of the handshake (a handshake held
open across a reload is judged by the new bundles and CRLs): a chain that fails is
audited once with its thumbprint and the connection is closed before any byte of HTTP
is read. A resumed session (no verified chain) is refused; the listener context issues
no tickets and keeps no session cache, so that does not happen.

The validated chain is connection state (`ConnState`, on the connection's handler),
not a global cache: each request of a keep-alive connection asks it for the peer under
its runtime's trust store, which costs one identity and one float comparison until the
chain's earliest notAfter (or CRL nextUpdate) passes or the runtime changes; then the
stored chain is validated again, and a failure closes the connection (401). A request
that is still running when a reload publishes a runtime or when the earliest
`valid_until` of the live connections passes (a WebSocket relay: it never starts
another request) has its connection validated again then; a failure is audited and the
connection aborted.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import weakref
from collections.abc import Callable
from typing import Any

import structlog

from ..errors import Unauthenticated
from ..model import PeerIdentity
from ..runtime import Runtime, RuntimeRef
from ..tls.spiffe import SvidError, thumbprints
from ..tls.trust import TrustStore, ValidatedChain, validate_chain_memo, verified_chain
from .rejections import RejectAggregator

log = structlog.get_logger("ztproxy.tls")


class ConnState:
    """One connection's verified identity: the chain and what it was validated under."""

    __slots__ = ("validated", "on_renew")

    def __init__(self, validated: ValidatedChain) -> None:
        self.validated = validated
        self.on_renew: Callable[[float], None] | None = None  # told each new valid_until

    def peer(self, trust: TrustStore, now: float) -> PeerIdentity:
        v = self.validated
        if v.still_valid(trust, now):
            return v.peer
        try:
            v = validate_chain_memo(v.chain, trust, now)
        except SvidError as exc:
            raise Unauthenticated(exc.audit_reason) from None
        self.validated = v
        if self.on_renew is not None:
            self.on_renew(v.valid_until)
        return v.peer


def connection_state(protocol: Any) -> ConnState | None:
    state = getattr(protocol, "zt_conn", None)
    return state if isinstance(state, ConnState) else None


def request_peer(request: Any, trust: TrustStore, now: float) -> PeerIdentity:
    """The `seams.PeerLookup` of the pipeline: the peer of the request's connection."""
    state = connection_state(request.protocol)
    if state is None:  # every handed-over connection has one; this cannot pass
        raise Unauthenticated("no_client_certificate")
    try:
        return state.peer(trust, now)
    except Unauthenticated:
        # The connection's identity no longer holds: answer this request (401), then
        # close the connection (aiohttp's close() lets the current handler finish).
        request.protocol.close()
        raise


def handshake_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        msg = (exc.verify_message or "").lower()
        if "expired" in msg:
            return "expired"
        if "not yet valid" in msg:
            return "not_yet_valid"
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

    def __init__(
        self,
        sock: socket.socket,
        *,
        runtime: RuntimeRef,
        handler_factory: Callable[[], asyncio.Protocol],
        on_reject: RejectFn,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sock = sock
        self._runtime = runtime
        self._handler_factory = handler_factory
        self._clock = clock
        self._rejects = RejectAggregator(on_reject)  # one record per source and interval
        self._on_reject: RejectFn = self._rejects
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting: asyncio.Task[None] | None = None
        # Connections handed over, for the identity sweep (see `_sweep`).
        self._live: weakref.WeakKeyDictionary[asyncio.Protocol, str] = weakref.WeakKeyDictionary()
        self._sweep_at = float("inf")
        self._sweep_handle: asyncio.TimerHandle | None = None
        runtime.watch(self._published)

    def start(self) -> None:
        self.sock.setblocking(False)
        self._accepting = asyncio.get_running_loop().create_task(self._accept(), name="tls-accept")

    async def close(self) -> None:
        """Stop accepting and abandon handshakes in progress."""
        if self._accepting is not None:
            self._accepting.cancel()
            await asyncio.gather(self._accepting, return_exceptions=True)
        self.sock.close()
        self._rejects.flush()
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
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
            task = loop.create_task(
                self._handshake(conn, addr[0] if addr else ""), name="tls-handshake"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handshake(self, conn: socket.socket, address: str) -> None:
        gate = _Gate()
        loop = asyncio.get_running_loop()
        runtime = self._runtime.current  # its context and timeout; judged by the newest
        assert runtime.tls is not None
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: gate,
                conn,
                ssl=runtime.tls,
                ssl_handshake_timeout=runtime.config.listener.handshake_timeout_seconds,
            )
        except (TimeoutError, ssl.SSLError, OSError, ConnectionError, RuntimeError) as exc:
            self._on_reject(address, handshake_reason(exc), None, None)
            conn.close()
            return
        tls = transport
        state = self.accept_chain(tls.get_extra_info("ssl_object"), address)
        if state is None:
            tls.abort()
            return
        if gate.lost:
            return
        handler = self._handler_factory()
        handler.zt_conn = state  # type: ignore[attr-defined]
        self._live[handler] = address
        state.on_renew = self._arm
        self._arm(state.validated.valid_until)
        tls.set_protocol(handler)
        handler.connection_made(tls)
        if gate.buffer:
            handler.data_received(b"".join(gate.buffer))
        if gate.eof:
            handler.eof_received()

    # -- identity of long-lived requests ----------------------------------------------
    # A request checks its connection's identity when it starts; a WebSocket (or any
    # request still running) never starts another. So when a reload publishes a runtime,
    # and when the earliest `valid_until` of a live connection passes, every live
    # connection is validated again under the current trust store; one that fails while
    # a request is running on it is audited and aborted. An idle one is left to its
    # next request (which validates it again when its window or runtime has moved on,
    # with the reason as a 401, and re-arms the sweep through `ConnState.on_renew`), so
    # a reload costs one validation per busy connection, not per open one.
    def _published(self, runtime: Runtime) -> None:
        self._sweep()

    def _arm(self, valid_until: float) -> None:
        at = valid_until + 1.0  # X.509 and CRL times are whole seconds; past them, it fails
        if at >= self._sweep_at or self._accepting is None or self._accepting.done():
            return
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
        self._sweep_at = at
        delay = max(at - self._clock(), 0.5)  # never a busy loop at a boundary
        self._sweep_handle = asyncio.get_running_loop().call_later(delay, self._sweep)

    def _sweep(self) -> None:
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
        self._sweep_handle, self._sweep_at = None, float("inf")
        trust, now = self._runtime.current.trust, self._clock()
        earliest = float("inf")
        for handler, address in list(self._live.items()):
            state = connection_state(handler)
            transport = getattr(handler, "transport", None)
            if state is None or transport is None or transport.is_closing():
                continue
            if getattr(handler, "_current_request", True) is None:  # idle
                if state.validated.still_valid(trust, now):
                    earliest = min(earliest, state.validated.valid_until)
                continue
            try:
                state.peer(trust, now)
            except Unauthenticated as exc:
                v = state.validated
                self._on_reject(address, exc.reason, v.peer.fingerprint_sha256, v.peer.spiffe_id)
                transport.abort()
                continue
            earliest = min(earliest, state.validated.valid_until)
        if earliest != float("inf"):
            self._arm(earliest)

    def accept_chain(self, ssl_object: Any, address: str) -> ConnState | None:
        """The validated identity of a finished handshake, under the runtime current
        NOW; or None after auditing the one reason it is refused."""
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            self._on_reject(address, "no_client_certificate", None, None)
            return None
        if ssl_object.session_reused:
            self._on_reject(address, "session_resumption_refused", thumbprints(der)[1], None)
            return None
        chain = verified_chain(ssl_object)
        if not chain or chain[0] != der:
            self._on_reject(address, "no_verified_chain", thumbprints(der)[1], None)
            return None
        try:
            return ConnState(validate_chain_memo(chain, self._runtime.current.trust, self._clock()))
        except SvidError as exc:
            self._on_reject(address, exc.audit_reason, thumbprints(der)[1], None)
            return None
        except Exception as exc:  # noqa: BLE001 - never leave a connection half-accepted
            log.error("chain_validation_error", error=type(exc).__name__)
            self._on_reject(address, "chain_validation_error", thumbprints(der)[1], None)
            return None


def listening_socket(
    address: str, port: int, *, reuse_port: bool, backlog: int = 1024
) -> socket.socket:
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
