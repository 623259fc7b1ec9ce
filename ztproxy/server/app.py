"""The proxy process: owns every long-lived resource and its lifecycle.

`Proxy.start()` builds the first `Runtime` (trust store and listener TLS context: bad
material fails here, before anything listens; upstream TLS contexts; authenticator;
decider; the pooled upstream client session), then the audit log, the pipeline, the
HTTP server, the TLS listener and the admin listener. `Proxy.stop()` undoes it in
reverse: stop accepting, drain in-flight requests up to
`timeouts.shutdown_drain_seconds`, close the runtime's parts, then close the audit log
last (it writes a final signed checkpoint).

`Proxy.reload()` (SIGHUP) builds a whole new `Runtime` from the config file (files read
in a worker thread, never on the event loop) and publishes it with one reference
assignment. A reload that fails at any step publishes nothing, closes what it had built
and logs one line saying why. Parts whose config did not change are shared with the new
runtime (the authenticator, the session); replaced parts are closed after the drain
period, once requests that started under the old runtime are done.
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
from ..outcome import Outcome
from ..pipeline import Pipeline
from ..policy import build_decider
from ..runtime import Runtime, RuntimeRef, header_plan
from ..seams import AuditSink, Authenticator, Decider
from ..tls.context import TLSMaterialError, server_context, upstream_context
from ..tls.trust import TrustMaterialError, TrustStore, load_trust_store
from .acceptor import TLSListener, listening_socket, request_peer
from .admin import start_admin
from .handler import AuditingRequestHandler

log = structlog.get_logger("ztproxy.server")


def client_session(config: Config) -> aiohttp.ClientSession:
    t = config.timeouts
    connector = aiohttp.TCPConnector(
        limit=config.limits.max_concurrent_requests,
        limit_per_host=0,
        ttl_dns_cache=60,
        enable_cleanup_closed=True,
        keepalive_timeout=30,
    )
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=t.upstream_connect_seconds,
        sock_connect=t.upstream_connect_seconds,
        sock_read=t.upstream_read_seconds,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
    )


def upstream_contexts(config: Config) -> dict[str, ssl.SSLContext | None]:
    return {route.name: upstream_context(route) for route in config.routes}


def tls_material(
    config: Config,
) -> tuple[TrustStore, ssl.SSLContext, dict[str, ssl.SSLContext | None]]:
    """Every file the runtime reads for TLS (blocking: run in a worker thread)."""
    trust = load_trust_store(config.trust_domains)
    return trust, server_context(config.listener, trust), upstream_contexts(config)


def _session_settings(config: Config) -> tuple[object, ...]:
    return (
        config.limits.max_concurrent_requests,
        config.timeouts.upstream_connect_seconds,
        config.timeouts.upstream_read_seconds,
    )


class Proxy:
    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics | None = None,
        authenticator: Authenticator | None = None,
        decider: Decider | None = None,
        audit: AuditSink | None = None,
        clock: Callable[[], float] = time.time,
        worker_id: int = 0,
        reuse_port: bool = False,
        sock: socket.socket | None = None,
    ) -> None:
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
        self._authenticator = authenticator or TokenAuthenticator(
            config.identity, metrics=self.metrics, clock=clock
        )
        self._decider = decider or self._new_decider(config)
        self._injected_decider = decider is not None
        self.runtime: RuntimeRef | None = None
        self._retired: set[asyncio.Task[None]] = set()
        self._generation = 0
        self._reload_lock = asyncio.Lock()
        self._listener: TLSListener | None = None
        self._runner: web.ServerRunner | None = None
        self._admin: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.pipeline: Pipeline | None = None
        self.port = 0
        self.admin_port = 0
        self.stopping = False

    def _new_decider(self, config: Config) -> Decider:
        return build_decider(
            config.policy,
            metrics=self.metrics,
            decision_paths=[r.decision_path for r in config.routes if r.decision_path],
        )

    @property
    def authenticator(self) -> Authenticator:
        return self.runtime.current.authenticator if self.runtime else self._authenticator

    @property
    def decider(self) -> Decider:
        return self.runtime.current.decider if self.runtime else self._decider

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        trust, tls, upstream_ssl = await asyncio.to_thread(tls_material, self.config)
        await self.audit.start()
        await self._authenticator.start()
        await self._decider.start()
        session = client_session(self.config)
        self.runtime = RuntimeRef(
            Runtime(
                config=self.config,
                trust=trust,
                tls=tls,
                upstream_ssl=upstream_ssl,
                authenticator=self._authenticator,
                decider=self._decider,
                session=session,
                headers=header_plan(self.config, self._authenticator),
            )
        )
        runtime = self.runtime
        outcome = Outcome(
            self.audit,
            self.metrics,
            clock=self.clock,
            revision=lambda: runtime.current.decider.revision,
        )
        self.pipeline = Pipeline(runtime, self.audit, request_peer, outcome, self.clock)
        loop = asyncio.get_running_loop()
        t = self.config.timeouts
        server = web.Server(self.pipeline.handle, loop=loop)
        self._runner = web.ServerRunner(
            server, handle_signals=False, shutdown_timeout=t.shutdown_drain_seconds
        )
        await self._runner.setup()
        pipeline = self.pipeline

        def handler() -> AuditingRequestHandler:
            cfg = runtime.current.config  # a reload's limits apply to new connections
            return AuditingRequestHandler(
                server,
                pipeline=pipeline,
                loop=loop,
                keepalive_timeout=cfg.timeouts.keepalive_seconds,
                max_line_size=cfg.limits.max_line_bytes,
                max_field_size=cfg.limits.max_line_bytes,
                access_log=None,
                auto_decompress=False,
                lingering_time=2.0,
            )

        listener = self.config.listener
        sock = self._sock or listening_socket(
            listener.address, listener.port, reuse_port=self.reuse_port
        )
        self._listener = TLSListener(
            sock,
            runtime=runtime,
            handler_factory=handler,
            on_reject=outcome.record_tls_rejected,
            clock=self.clock,
        )
        self._listener.start()
        self.port = sock.getsockname()[1]
        if self.config.admin.enabled:
            self._admin, self.admin_port = await start_admin(self)
        log.info(
            "started",
            address=listener.address,
            port=self.port,
            worker=self.worker_id,
            routes=len(self.config.routes),
            admin_port=self.admin_port or None,
            policy_revision=self.decider.revision,
        )

    async def stop(self) -> None:
        """Stop accepting, drain in-flight requests, then close everything."""
        self.stopping = True
        if self._listener is not None:
            await self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()
        for task in list(self._retired):
            task.cancel()
        await asyncio.gather(*self._retired, return_exceptions=True)
        rt = self.runtime.current if self.runtime else None
        if rt is not None and rt.session is not None:
            await rt.session.close()
        await self.decider.close()
        await self.authenticator.close()
        if self._admin is not None:
            await self._admin.cleanup()
        await self.audit.close()
        log.info("stopped", worker=self.worker_id)

    # -- operations ---------------------------------------------------------------------
    def readiness(self) -> dict[str, Any]:
        parts: dict[str, Any] = {"tls": self.runtime is not None and not self.stopping}
        parts["identity"] = dict(self.authenticator.readiness())
        parts["policy"] = dict(self.decider.readiness())
        parts["audit"] = dict(self.audit.readiness())
        ready = parts["tls"] and all(
            all(v.values()) if isinstance(v, Mapping) else bool(v) for v in parts.values()
        )
        return {"ready": bool(ready), "components": parts, "policy_revision": self.decider.revision}

    async def reload(self) -> bool:
        """SIGHUP: build a new runtime from the config file and publish it whole, or
        change nothing and log one line saying why."""
        async with self._reload_lock:  # one reload at a time: each builds on the last
            return await self._reload()

    async def _reload(self) -> bool:
        assert self.runtime is not None
        old = self.runtime.current
        source = self.config.source
        built: list[Authenticator | Decider | aiohttp.ClientSession] = []
        try:
            new = await asyncio.to_thread(load_config, source) if source else self.config
            if (new.listener.address, new.listener.port) != (
                old.config.listener.address,
                old.config.listener.port,
            ):
                raise ConfigError(
                    [
                        "listener.address/port: a new address or port needs a "
                        "restart; nothing changed"
                    ]
                )
            trust, tls, upstream_ssl = await asyncio.to_thread(tls_material, new)
            authenticator = old.authenticator
            if new.identity != old.config.identity:
                authenticator = TokenAuthenticator(
                    new.identity, metrics=self.metrics, clock=self.clock
                )
                built.append(authenticator)
                await authenticator.start()
            session = old.session
            if _session_settings(new) != _session_settings(old.config):
                session = client_session(new)
                built.append(session)
            decider = old.decider  # last: a same-config policy reload is in place
            if new.policy != old.config.policy or _decision_paths(new) != _decision_paths(
                old.config
            ):
                if self._injected_decider:
                    raise ConfigError(
                        [
                            "policy: changed, but this proxy's decider was "
                            "injected and cannot be rebuilt"
                        ]
                    )
                decider = self._new_decider(new)
                built.append(decider)
                await decider.start()
            elif not await decider.reload():  # same config: re-read the policy files
                raise ConfigError(["policy: the policy files do not load; nothing changed"])
        except Exception as exc:  # noqa: BLE001 - any failure: publish nothing, say why
            for part in reversed(built):
                try:
                    await part.close()
                except Exception:  # noqa: BLE001, S110 - already failing; keep the first reason
                    pass
            known = isinstance(exc, (ConfigError, TLSMaterialError, TrustMaterialError))
            log.error(
                "reload_failed",
                error=str(exc).replace("\n", "; ") if known else f"unexpected {type(exc).__name__}",
            )
            return False
        self._generation += 1
        self.runtime.current = Runtime(
            config=new,
            trust=trust,
            tls=tls,
            upstream_ssl=upstream_ssl,
            authenticator=authenticator,
            decider=decider,
            session=session,
            headers=header_plan(new, authenticator),
            generation=self._generation,
        )
        self.config = new
        retired = [
            p
            for p, q in (
                (old.authenticator, authenticator),
                (old.decider, decider),
                (old.session, session),
            )
            if p is not q and p is not None
        ]
        if retired:
            task = asyncio.get_running_loop().create_task(
                self._retire(retired, new.timeouts.shutdown_drain_seconds), name="retire"
            )
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)
        log.info(
            "reloaded",
            routes=len(new.routes),
            generation=self._generation,
            policy_revision=decider.revision,
        )
        if self.pipeline is not None:  # live WebSocket sessions: ask the new policy again
            closed = await self.pipeline.sessions.recheck(decider.decide)
            if closed:
                log.info("websocket_sessions_closed", count=closed, why="policy_reload")
        return True

    async def _retire(self, parts: list[Any], after: float) -> None:
        """Close what the old runtime used once requests started under it are done."""
        try:
            await asyncio.sleep(after)
        finally:
            for part in parts:
                try:
                    await part.close()
                except Exception:  # noqa: BLE001 - closing a retired part never fails a reload
                    log.warning("retire_failed", part=type(part).__name__)


def _decision_paths(config: Config) -> tuple[str, ...]:
    return tuple(r.decision_path for r in config.routes if r.decision_path)
