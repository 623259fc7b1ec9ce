"""TLS contexts: the listener's (mutual TLS, client certificate required) and the
ones used towards upstreams (TLS or mTLS per route).

The listener context is rebuilt on reload; new handshakes take the new context,
established connections keep theirs. Building a context is also how a config is
checked for usable TLS material, so errors name the file, never key bytes.
"""

from __future__ import annotations

import ssl

from ..config.core import ListenerConfig
from ..model import Route


class TLSMaterialError(Exception):
    """Unusable certificate, key, CA or CRL file."""


def server_context(cfg: ListenerConfig) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = (ssl.TLSVersion.TLSv1_3 if cfg.min_tls_version == "1.3"
                           else ssl.TLSVersion.TLSv1_2)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise TLSMaterialError(
            f"listener.cert_file/key_file: cannot load {cfg.cert_file}: "
            f"{getattr(exc, 'reason', None) or type(exc).__name__}") from None
    try:
        ctx.load_verify_locations(cafile=cfg.client_ca_file)
    except (ssl.SSLError, OSError) as exc:
        raise TLSMaterialError(f"listener.client_ca_file: cannot load {cfg.client_ca_file}: "
                               f"{getattr(exc, 'reason', None) or type(exc).__name__}") from None
    if cfg.crl_file:
        try:
            ctx.load_verify_locations(cafile=cfg.crl_file)
        except (ssl.SSLError, OSError) as exc:
            raise TLSMaterialError(f"listener.crl_file: cannot load {cfg.crl_file}: "
                                   f"{getattr(exc, 'reason', None) or type(exc).__name__}"
                                   ) from None
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


def upstream_context(route: Route) -> ssl.SSLContext | None:
    """The client context for an https upstream, or None for plain http."""
    if not route.upstream.startswith("https://"):
        return None
    ctx = ssl.create_default_context(cafile=route.upstream_ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if route.upstream_cert_file and route.upstream_key_file:
        try:
            ctx.load_cert_chain(route.upstream_cert_file, route.upstream_key_file)
        except (ssl.SSLError, OSError) as exc:
            raise TLSMaterialError(
                f"routes[{route.name}].upstream_cert_file: cannot load: "
                f"{getattr(exc, 'reason', None) or type(exc).__name__}") from None
    return ctx
