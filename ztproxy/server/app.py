"""The proxy process: owns every long-lived resource and its lifecycle.

`Proxy.start()` builds, in order: the listener TLS context (bad material fails here,
before anything listens), the audit log, the identity verifier, the policy decider,
the one pooled upstream client session, the pipeline, the HTTP server, the TLS
listener and the admin listener. `Proxy.stop()` undoes it in reverse: stop accepting,
drain in-flight requests up to `timeouts.shutdown_drain_seconds`, close the client
session and the decider and verifier, then close the audit log last (it writes a
final signed checkpoint). `Proxy.reload()` re-reads the config file and swaps what
changed; a reload that fails keeps everything that was running and says why.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from ..config.load import Config, load_config
from ..errors import ConfigError
from ..identity import TokenAuthenticator
from ..metrics import Metrics
from ..pipeline import Pipeline
from ..policy import build_decider
from ..seams import AuditSink, Authenticator, Decider
from ..tls.context import TLSMaterialError, server_context, upstream_context
from .acceptor import PeerCache, TLSListener, listening_socket
from .admin import start_admin
from .handler import AuditingRequestHandler

log = structlog.get_logger("ztproxy.server")


def client_session(config: Config) -> aiohttp.ClientSession:
    t = config.timeouts
    connector = aiohttp.TCPConnector(limit=config.limits.max_concurrent_requests,
                                     limit_per_host=0, ttl_dns_cache=60,
                                     enable_cleanup_closed=True, keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(total=None, connect=t.upstream_connect_seconds,
                                    sock_connect=t.upstream_connect_seconds,
                                    sock_read=t.upstream_read_seconds)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                 cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
                                 skip_auto_headers=("User-Agent", "Accept-Encoding",
                                                    "Accept", "Content-Type"))


def upstream_contexts(config: Config) -> dict[str, ssl.SSLContext | None]:
    return {route.name: upstream_context(route) for route in config.routes}


class Proxy:
    def __init__(self, config: Config, *, metrics: Metrics | None = None,
                 authenticator: Authenticator | None = None, decider: Decider | None = None,
                 audit: AuditSink | None = None, clock: Callable[[], float] = time.time,
                 worker_id: int = 0, reuse_port: bool = False,
                 sock: socket.socket | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.worker_id = worker_id
        self.reuse_port = reuse_port
        self._sock = sock
        if audit is None:
            from ..audit import AuditLog

            audit = AuditLog(config.audit, worker_id=worker_id, metrics=self.metrics, clock=clock)
        self.audit = audit
        self.authenticator = authenticator or TokenAuthenticator(
            config.identity, metrics=self.metrics, clock=clock)
        self.decider = decider or build_decider(
            config.policy, metrics=self.metrics,
            decision_paths=[r.decision_path for r in config.routes if r.decision_path])
        self.peers = PeerCache()
        self._tls: ssl.SSLContext | None = None
        self._listener: TLSListener | None = None
        self._runner: web.ServerRunner | None = None
        self._admin: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.pipeline: Pipeline | None = None
        self.port = 0
        self.admin_port = 0
        self.stopping = False

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        self._tls = server_context(self.config.listener)
        upstream_ssl = upstream_contexts(self.config)
        await self.audit.start()
        await self.authenticator.start()
        await self.decider.start()
        self._session = client_session(self.config)
        self.pipeline = Pipeline(self.config, self.authenticator, self.decider, self.audit,
                                 self.peers, self._session, upstream_ssl, self.metrics,
                                 self.clock)
        loop = asyncio.get_running_loop()
        lim, t = self.config.limits, self.config.timeouts
        server = web.Server(self.pipeline.handle, loop=loop)
        self._runner = web.ServerRunner(server, handle_signals=False,
                                        shutdown_timeout=t.shutdown_drain_seconds)
        await self._runner.setup()
        pipeline = self.pipeline

        def handler() -> AuditingRequestHandler:
            return AuditingRequestHandler(
                server, pipeline=pipeline, peers=self.peers, loop=loop,
                keepalive_timeout=t.keepalive_seconds, max_line_size=lim.max_line_bytes,
                max_field_size=lim.max_line_bytes, access_log=None, auto_decompress=False,
                lingering_time=2.0)

        def context() -> ssl.SSLContext:
            assert self._tls is not None
            return self._tls

        listener = self.config.listener
        sock = self._sock or listening_socket(listener.address, listener.port,
                                              reuse_port=self.reuse_port)
        self._listener = TLSListener(
            sock, context=context, handler_factory=handler,
            trust_domains=lambda: self.config.trust_domains, peers=self.peers,
            on_reject=pipeline.record_tls_rejected,
            handshake_timeout=listener.handshake_timeout_seconds)
        self._listener.start()
        self.port = sock.getsockname()[1]
        if self.config.admin.enabled:
            self._admin, self.admin_port = await start_admin(self)
        log.info("started", address=listener.address, port=self.port, worker=self.worker_id,
                 routes=len(self.config.routes), admin_port=self.admin_port or None,
                 policy_revision=self.decider.revision)

    async def stop(self) -> None:
        """Stop accepting, drain in-flight requests, then close everything."""
        self.stopping = True
        if self._listener is not None:
            await self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        await self.decider.close()
        await self.authenticator.close()
        if self._admin is not None:
            await self._admin.cleanup()
        await self.audit.close()
        log.info("stopped", worker=self.worker_id)

    # -- operations ---------------------------------------------------------------------
    def readiness(self) -> dict[str, Any]:
        parts: dict[str, Any] = {"tls": self._tls is not None and not self.stopping}
        parts["identity"] = dict(self.authenticator.readiness())
        parts["policy"] = dict(self.decider.readiness())
        parts["audit"] = dict(self.audit.readiness())
        ready = parts["tls"] and all(
            all(v.values()) if isinstance(v, Mapping) else bool(v) for v in parts.values())
        return {"ready": bool(ready), "components": parts,
                "policy_revision": self.decider.revision}

    async def reload(self) -> bool:
        """SIGHUP: re-read the config file; swap TLS material, routes, issuers, policy.
        On any failure keep what runs and log why."""
        source = self.config.source
        try:
            new = load_config(source) if source else self.config
            tls = server_context(new.listener)
            upstream_ssl = upstream_contexts(new)
        except (ConfigError, TLSMaterialError) as exc:
            log.error("reload_failed", error=str(exc))
            return False
        pipeline = self.pipeline
        assert pipeline is not None
        if new.identity != self.config.identity:
            fresh = TokenAuthenticator(new.identity, metrics=self.metrics, clock=self.clock)
            await fresh.start()
            old, self.authenticator = self.authenticator, fresh
            pipeline.authenticator = fresh
            await old.close()
        policy_ok = await self.decider.reload()
        self._tls = tls
        self.peers.clear()
        self.config = new
        pipeline.config = new
        pipeline.upstream_ssl = upstream_ssl
        pipeline.__post_init__()
        log.info("reloaded", policy_reloaded=policy_ok, routes=len(new.routes),
                 policy_revision=self.decider.revision)
        return True
