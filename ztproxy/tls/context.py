"""TLS contexts: the listener's (mutual TLS, client certificate required) and the
ones used towards upstreams (TLS or mTLS per route).

The listener context is rebuilt on reload; new handshakes take the new context,
established connections keep theirs. Building a context is also how a config is
checked for usable TLS material, so errors name the file, never key bytes.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from ..config.core import ListenerConfig
from ..model import Route


class TLSMaterialError(Exception):
    """Unusable certificate, key, CA or CRL file."""


def _load(key: str, path: str, load: Callable[[], object]) -> None:
    """Run one load step; a failure names the config key and the file, never key bytes."""
    try:
        load()
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or \
            type(exc).__name__
        raise TLSMaterialError(f"{key}: cannot load {path}: {reason}") from None


def server_context(cfg: ListenerConfig) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = (ssl.TLSVersion.TLSv1_3 if cfg.min_tls_version == "1.3"
                           else ssl.TLSVersion.TLSv1_2)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols(["http/1.1"])
    _load("listener.cert_file/key_file", cfg.cert_file,
          lambda: ctx.load_cert_chain(cfg.cert_file, cfg.key_file))
    _load("listener.client_ca_file", cfg.client_ca_file,
          lambda: ctx.load_verify_locations(cafile=cfg.client_ca_file))
    if cfg.crl_file:
        crl = cfg.crl_file
        _load("listener.crl_file", crl, lambda: ctx.load_verify_locations(cafile=crl))
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


def upstream_context(route: Route) -> ssl.SSLContext | None:
    """The client context for an https upstream, or None for plain http."""
    if not route.upstream.startswith("https://"):
        return None
    ca = route.upstream_ca_file
    if ca:  # only this bundle is trusted, not the system roots
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies chain and host name
        _load(f"routes[{route.name}].upstream_ca_file", ca,
              lambda: ctx.load_verify_locations(cafile=ca))
    else:
        ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    cert, key = route.upstream_cert_file, route.upstream_key_file
    if cert and key:
        _load(f"routes[{route.name}].upstream_cert_file", cert,
              lambda: ctx.load_cert_chain(cert, key))
    return ctx
