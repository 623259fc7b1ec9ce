"""The request pipeline: the one module that knows the order of the stages.

    audit log accepting?          -> else 503 audit_unavailable
    peer identity (from the TLS handshake, already validated)
    canonical request + route     stages.request        -> RequestFacts | 400/404/431
    user + device credentials     seams.Authenticator   -> Credentials  | 401/503
    policy input                  stages.policy_input   -> dict
    decision                      seams.Decider         -> Decision     | 403/503
    forward (HTTP or WebSocket)   stages.forward        -> response     | 502/504/413
    audit record                  seams.AuditSink       (always, exactly once)

Every failure is a `Rejection` with a status and a stable reason code; the client gets
a short generic JSON body with the request id, the log and the audit record get the
reason. Anything unexpected is caught once, here, and denies (500): nothing that goes
wrong can let a request through.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from .config.load import Config
from .errors import Rejection, ServiceUnavailable, Unauthenticated
from .metrics import Metrics
from .model import AuditEvent, Credentials, Decision, PeerIdentity, RequestFacts
from .seams import AuditSink, Authenticator, Decider, PeerLookup
from .stages.audit_fields import attempted_path, audited_path, escaped
from .stages.forward import ForwardResult, forward
from .stages.headers import (
    BASE_CREDENTIAL_HEADERS,
    asserted_headers,
    check_claims_header_safe,
    upstream_headers,
)
from .stages.limits import ConcurrencyLimits
from .stages.policy_input import build_policy_input, input_digest, rfc3339_ms
from .stages.request import build_request_facts
from .stages.respond import denied_response, error_response, rejection_response
from .stages.websocket import LiveSessions, is_websocket_upgrade, proxy_websocket, session_deadline

log = structlog.get_logger("ztproxy.request")
_PROTOCOLS: dict[tuple[int, int], str] = {}


def _protocol(version: tuple[int, int]) -> str:
    """"HTTP/1.1" for (1, 1): made once per version seen (the parser knows only a few)."""
    text = _PROTOCOLS.get(version)
    if text is None:
        text = _PROTOCOLS[version] = f"HTTP/{version[0]}.{version[1]}"
    return text


@dataclass(slots=True)
class _Trace:
    """What is known about one request so far; becomes the audit event."""

    request_id: str
    started_ns: int
    source_address: str
    peer: PeerIdentity | None = None
    facts: RequestFacts | None = None
    creds: Credentials | None = None
    decision: Decision | None = None
    input_sha256: str | None = None
    stages: dict[str, int] = field(default_factory=dict)
    attempt: tuple[str, str | None, str] | None = None  # method, Host, raw target as parsed
    doc: Mapping[str, Any] | None = None  # the policy input (kept for WebSocket rechecks)


@dataclass(slots=True)
class Pipeline:
    config: Config
    authenticator: Authenticator
    decider: Decider
    audit: AuditSink
    peer_lookup: PeerLookup
    session: aiohttp.ClientSession
    upstream_ssl: Mapping[str, ssl.SSLContext | None]
    metrics: Metrics
    clock: Callable[[], float] = time.time
    _hidden: frozenset[str] = frozenset()
    _stripped: frozenset[str] = frozenset()
    _not_forwarded: frozenset[str] = frozenset()
    _counters: dict[tuple[str, str, str], Any] = field(default_factory=dict)
    _stages: dict[str, Any] = field(default_factory=dict)
    _routes: dict[str, Any] = field(default_factory=dict)
    header_phase: dict[str, int] = field(default_factory=dict)  # source -> connections
    limits: ConcurrencyLimits = field(default_factory=ConcurrencyLimits)
    sessions: LiveSessions = field(default_factory=LiveSessions)  # recheck() on reload

    def __post_init__(self) -> None:
        creds = frozenset(self.authenticator.credential_header_names()) | BASE_CREDENTIAL_HEADERS
        self._hidden = creds | frozenset(self.config.headers.strip) | frozenset(
            self.config.headers.asserted())
        self._stripped = frozenset(self.config.headers.strip) | frozenset(
            self.config.headers.asserted())
        # Tokens stop here; the application's own cookies go on to it (never to the
        # policy, a log line or the audit record).
        self._not_forwarded = creds - {"cookie"}

    # -- the request path -------------------------------------------------------------
    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        trace = _Trace(os.urandom(16).hex(), time.perf_counter_ns(), request.remote or "")
        self.metrics.in_flight.inc()
        status, reason = 500, "internal_error"
        try:
            result = await self._run(request, trace)
            status = result.status
            reason = ("upstream_aborted" if result.aborted else
                      trace.decision.reason if trace.decision else "allowed")
            return result.response
        except Rejection as exc:
            status, reason = exc.status, exc.reason
            return rejection_response(exc, trace.request_id)
        except Exception:  # noqa: BLE001 - the one outermost handler: it never allows
            log.exception("internal_error", request_id=trace.request_id)
            return error_response(500, trace.request_id)
        finally:
            self.metrics.in_flight.dec()
            self._finish(trace, status, reason)

    async def _run(self, request: web.BaseRequest, trace: _Trace) -> ForwardResult:
        if not self.audit.accepting():
            raise ServiceUnavailable("audit_unavailable")
        t0 = time.perf_counter_ns()
        trace.peer = self._peer(request)
        cfg = self.config
        trace.attempt = (request.method, request.headers.get("Host"), request.raw_path)
        facts = build_request_facts(
            request_id=trace.request_id, method=request.method, raw_target=request.raw_path,
            version=_protocol(request.version),
            headers=request.headers, source_address=trace.source_address,
            now=datetime.fromtimestamp(self.clock(), UTC), routes=cfg.routes,
            max_header_bytes=cfg.limits.max_header_bytes, hidden_headers=self._hidden,
            strip_prefixes=cfg.headers.strip_prefixes)
        trace.facts = facts
        t1 = time.perf_counter_ns()
        trace.stages["request"] = t1 - t0
        creds = await self.authenticator.authenticate(request.headers, facts.raw_query,
                                                      facts.route, trace.peer)
        trace.creds = creds
        check_claims_header_safe(creds)
        t2 = time.perf_counter_ns()
        trace.stages["identity"] = t2 - t1
        doc = build_policy_input(facts, trace.peer, creds)
        trace.input_sha256 = input_digest(doc)
        trace.doc = doc
        decision = await self.decider.decide(facts.route.decision_path or
                                             cfg.policy.decision_path, doc)
        trace.decision = decision
        t3 = time.perf_counter_ns()
        trace.stages["policy"] = t3 - t2
        if not decision.allowed:
            resp = denied_response(decision, trace.request_id)
            return ForwardResult(resp, resp.status)
        release = self.limits.acquire(trace.peer.spiffe_id, facts.route,
                                      cfg.limits.max_concurrent_per_caller)
        try:
            result = await self._forward(request, trace, facts, creds, decision)
        finally:
            release()
        trace.stages["upstream"] = time.perf_counter_ns() - t3
        return result

    def _peer(self, request: web.BaseRequest) -> PeerIdentity:
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        peer = self.peer_lookup(der) if der else None
        if peer is None:  # the acceptor validated every handshake; this cannot pass
            raise Unauthenticated("no_client_certificate")
        return peer

    async def _forward(self, request: web.BaseRequest, trace: _Trace, facts: RequestFacts,
                       creds: Credentials, decision: Decision) -> ForwardResult:
        route = facts.route
        headers = upstream_headers(
            request.headers, stripped=self._stripped,
            credential_headers=self._not_forwarded,
            asserted=asserted_headers(self.config.headers, trace.peer, creds, trace.source_address,
                                     trace.request_id),
            policy_headers=decision.headers, strip_prefixes=self.config.headers.strip_prefixes,
            passed=route.pass_headers)
        target = f"{facts.path}?{facts.raw_query}" if facts.raw_query else facts.path
        ssl_ctx = self.upstream_ssl.get(route.name)
        if route.websocket and is_websocket_upgrade(request.headers):
            if trace.peer is None or trace.doc is None:  # both are set before a decision
                raise ValueError("no peer or policy input")
            live = self.sessions.open(route.decision_path or self.config.policy.decision_path,
                                      trace.doc)
            try:
                return await proxy_websocket(
                    request, upstream_url=route.upstream, target=target, headers=headers,
                    session=self.session, ssl_context=ssl_ctx,
                    connect_timeout=self.config.timeouts.upstream_connect_seconds,
                    deadline=session_deadline(creds, trace.peer.not_after), stop=live.stop,
                    clock=self.clock)
            finally:
                self.sessions.close(live)
        return await forward(request, upstream_url=route.upstream, target=target,
                             headers=headers, session=self.session, ssl_context=ssl_ctx,
                             max_body_bytes=self.config.limits.max_body_bytes,
                             response_headers=dict(decision.response_headers),
                             body_idle=self.config.timeouts.body_idle_seconds,
                             body_total=self.config.timeouts.body_total_seconds)

    # -- audit and telemetry ----------------------------------------------------------
    def _finish(self, trace: _Trace, status: int, reason: str) -> None:
        latency_us = (time.perf_counter_ns() - trace.started_ns) // 1000
        facts, peer, creds, decision = trace.facts, trace.peer, trace.creds, trace.decision
        route = facts.route.name if facts else "-"
        attempt = trace.attempt if facts is None else None
        event = AuditEvent(
            kind="request",
            time=(facts.time_text or rfc3339_ms(facts.time)) if facts else rfc3339_ms(
                datetime.fromtimestamp(self.clock(), UTC)),
            request_id=trace.request_id,
            source_address=trace.source_address,
            reason=reason,
            decision="allow" if decision is not None and decision.allowed else "deny",
            status=status,
            latency_us=latency_us,
            source_spiffe_id=peer.spiffe_id if peer else None,
            source_cert_sha256=peer.fingerprint_sha256 if peer else None,
            user_issuer=creds.user.issuer if creds and creds.user else None,
            user_subject=creds.user.subject if creds and creds.user else None,
            device_id=creds.device.device_id if creds and creds.device else None,
            method=facts.method if facts else attempt and escaped(attempt[0]),
            host=facts.host if facts else attempt and escaped(attempt[1]),
            path=audited_path(facts.path) if facts else attempt and attempted_path(attempt[2]),
            destination_service=facts.route.service if facts else None,
            route=facts.route.name if facts else None,
            policy_revision=decision.policy_revision if decision else self.decider.revision,
            policy_input_sha256=trace.input_sha256,
            policy_reasons=tuple(decision.reasons) if decision else (),
        )
        self.audit.append(event)
        self._count(route, event.decision, reason)
        for stage, ns in trace.stages.items():
            self._stage(stage).observe(ns / 1e9)
        self._latency(route).observe(latency_us / 1e6)
        if not log.is_enabled_for(logging.INFO):  # skip building the line at all
            return
        log.info("request", request_id=trace.request_id, route=route,
                 source=event.source_spiffe_id, user=event.user_subject,
                 device=event.device_id, method=event.method, path=event.path,
                 decision=event.decision, reason=reason, status=status,
                 latency_us=latency_us,
                 stages_us={k: v // 1000 for k, v in trace.stages.items()},
                 cached=decision.cached if decision else None)

    def _count(self, route: str, decision: str, reason: str) -> None:
        # prometheus_client's labels() takes a lock and builds a tuple key each call;
        # the label sets are bounded (routes x decisions x reason codes), so keep them.
        key = (route, decision, reason)
        child = self._counters.get(key)
        if child is None:
            child = self._counters[key] = self.metrics.requests.labels(route, decision, reason)
        child.inc()

    def _stage(self, stage: str) -> Any:
        child = self._stages.get(stage)
        if child is None:
            child = self._stages[stage] = self.metrics.stage_seconds.labels(stage)
        return child

    def _latency(self, route: str) -> Any:
        child = self._routes.get(route)
        if child is None:
            child = self._routes[route] = self.metrics.request_seconds.labels(route)
        return child

    # -- events from outside the request handler ---------------------------------------
    def record_unparsable(self, source_address: str, peer: PeerIdentity | None, status: int,
                          reason: str) -> str:
        """A request the HTTP parser refused (bad framing, header line too long)."""
        request_id = os.urandom(16).hex()
        now = datetime.fromtimestamp(self.clock(), UTC)
        self.audit.append(AuditEvent(
            kind="request", time=rfc3339_ms(now), request_id=request_id,
            source_address=source_address, reason=reason, decision="deny", status=status,
            latency_us=0, source_spiffe_id=peer.spiffe_id if peer else None,
            source_cert_sha256=peer.fingerprint_sha256 if peer else None,
            policy_revision=self.decider.revision))
        self._count("-", "deny", reason)
        log.info("request", request_id=request_id, source=peer.spiffe_id if peer else None,
                 decision="deny", reason=reason, status=status)
        return request_id

    def record_tls_rejected(self, source_address: str, reason: str,
                            peer_cert_sha256: str | None, spiffe_id: str | None,
                            count: int = 1) -> None:
        """`count` > 1: that many repeats, aggregated (server.rejections)."""
        now = datetime.fromtimestamp(self.clock(), UTC)
        self.audit.append(AuditEvent(
            kind="tls_rejected", time=rfc3339_ms(now), request_id=os.urandom(16).hex(),
            source_address=source_address, reason=reason, decision="deny", status=0,
            latency_us=0, source_spiffe_id=spiffe_id, source_cert_sha256=peer_cert_sha256,
            policy_reasons=() if count == 1 else (f"count={count}",)))
        self.metrics.tls_handshake_failures.labels(reason).inc(count)
        log.info("tls_rejected", source_address=source_address, reason=reason,
                 cert_sha256=peer_cert_sha256, count=count)
