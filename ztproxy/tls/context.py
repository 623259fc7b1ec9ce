"""TLS contexts: the listener's (mutual TLS, client certificate required) and the
ones used towards upstreams (TLS or mTLS per route).

The listener context is part of the runtime and rebuilt on reload; new handshakes take
the new context; established connections are re-validated against the new trust store
before their next request (see tls/trust.py). Building a context is also how a config is
checked for usable TLS material, so errors name the file, never key bytes.
"""

from __future__ import annotations

import ctypes
import ssl
import sys
from collections.abc import Callable

from ..config.core import ListenerConfig
from ..model import Route
from .trust import TrustStore


class TLSMaterialError(Exception):
    """Unusable certificate, key, CA or CRL file."""


def _load(key: str, path: str, load: Callable[[], object]) -> None:
    """Run one load step; a failure names the config key and the file, never key bytes."""
    try:
        load()
    except (ssl.SSLError, OSError) as exc:
        reason = (
            getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
        )
        raise TLSMaterialError(f"{key}: cannot load {path}: {reason}") from None


def server_context(cfg: ListenerConfig, trust: TrustStore) -> ssl.SSLContext:
    """The listener's context. OpenSSL verifies the client chain against the union of
    every trust domain's bundle (per-domain anchoring, the SVID rules and the CRLs of
    every chain certificate are checked after the handshake, in trust.validate_chain).

    No resumption: a resumed session skips certificate verification, so TLS 1.3 issues
    no tickets (`num_tickets = 0`), TLS 1.2 no tickets (OP_NO_TICKET) and the server
    session-ID cache is switched off (`disable_session_cache`). The acceptor also
    refuses any handshake that reports `session_reused` (fail closed if OpenSSL ever
    resumes anyway)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if cfg.min_tls_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_TICKET
    ctx.num_tickets = 0
    disable_session_cache(ctx)
    ctx.set_alpn_protocols(["http/1.1"])
    _load(
        "listener.cert_file/key_file",
        cfg.cert_file,
        lambda: ctx.load_cert_chain(cfg.cert_file, cfg.key_file),
    )
    _load(
        "trust_domains[].bundle_file",
        "the trust bundles",
        lambda: ctx.load_verify_locations(cadata=trust.bundle_pem),
    )
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


_SSL_CTRL_SET_SESS_CACHE_MODE = 44
_SSL_CTRL_GET_SESS_CACHE_MODE = 45
_SSL_SESS_CACHE_SERVER = 2


def disable_session_cache(ctx: ssl.SSLContext) -> bool:
    """SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF), which the ssl module does
    not expose. The SSL_CTX pointer is the first field after PyObject_HEAD of CPython's
    PySSLContext; it is used only after reading the cache mode back as OpenSSL's server
    default (a wrong pointer would not answer 2). Returns whether the cache is off; when
    not, resumed sessions are still refused by the acceptor."""
    if sys.implementation.name != "cpython":
        return False
    try:
        lib = ctypes.CDLL(ssl._ssl.__file__)  # type: ignore[attr-defined]
        ctrl = lib.SSL_CTX_ctrl
        ctrl.restype = ctypes.c_long
        ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
        mode = ctrl(ptr, _SSL_CTRL_GET_SESS_CACHE_MODE, 0, None) if ptr else -1
        if mode == 0:
            return True
        if mode != _SSL_SESS_CACHE_SERVER:
            return False
        ctrl(ptr, _SSL_CTRL_SET_SESS_CACHE_MODE, 0, None)
        return bool(ctrl(ptr, _SSL_CTRL_GET_SESS_CACHE_MODE, 0, None) == 0)
    except (OSError, AttributeError, ValueError):
        return False


def upstream_context(route: Route) -> ssl.SSLContext | None:
    """The client context for an https upstream, or None for plain http."""
    if not route.upstream.startswith("https://"):
        return None
    ca = route.upstream_ca_file
    if ca:  # only this bundle is trusted, not the system roots
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies chain and host name
        _load(
            f"routes[{route.name}].upstream_ca_file",
            ca,
            lambda: ctx.load_verify_locations(cafile=ca),
        )
    else:
        ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    cert, key = route.upstream_cert_file, route.upstream_key_file
    if cert and key:
        _load(
            f"routes[{route.name}].upstream_cert_file", cert, lambda: ctx.load_cert_chain(cert, key)
        )
    return ctx
