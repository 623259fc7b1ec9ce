"""What happened to a request or a handshake, told to the audit log, the metrics and the
log: the plumbing the pipeline calls once per request (`finish`) and the acceptor and
the connection handler call for what never reaches the pipeline (a refused handshake,
a request the HTTP parser refused).

Every request gets exactly one audit record, written from `Trace` (what is known so
far when the request ends, however it ends).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from .metrics import Metrics
from .model import AuditEvent, Credentials, Decision, PeerIdentity, RequestFacts
from .seams import AuditSink
from .stages.audit_fields import attempted_path, audited_path, escaped
from .stages.policy_input import rfc3339_ms

log = structlog.get_logger("ztproxy.request")


@dataclass(slots=True)
class Trace:
    """What is known about one request so far; becomes the audit event."""

    request_id: str
    started_ns: int
    source_address: str
    peer: PeerIdentity | None = None
    facts: RequestFacts | None = None
    creds: Credentials | None = None
    decision: Decision | None = None
    input_sha256: str | None = None
    policy_revision: str = ""
    stages: dict[str, int] = field(default_factory=dict)
    attempt: tuple[str, str | None, str] | None = None  # method, Host, raw target as parsed
    doc: Mapping[str, Any] | None = None  # the policy input (kept for WebSocket rechecks)


class Outcome:
    """Audit record, metrics and log line for each outcome."""

    def __init__(
        self,
        audit: AuditSink,
        metrics: Metrics,
        *,
        revision: Callable[[], str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.audit = audit
        self.metrics = metrics
        self._revision = revision
        self._clock = clock
        # prometheus children by label set: the sets are bounded (routes x decisions x
        # reason codes) and independent of the config (a label set stays valid).
        self._counters: dict[tuple[str, str, str], Any] = {}
        self._stages: dict[str, Any] = {}
        self._routes: dict[str, Any] = {}

    def begin(self, source_address: str) -> Trace:
        self.metrics.in_flight.inc()
        return Trace(os.urandom(16).hex(), time.perf_counter_ns(), source_address)

    def finish(self, trace: Trace, status: int, reason: str) -> None:
        self.metrics.in_flight.dec()
        latency_us = (time.perf_counter_ns() - trace.started_ns) // 1000
        facts, peer, creds, decision = trace.facts, trace.peer, trace.creds, trace.decision
        route = facts.route.name if facts else "-"
        attempt = trace.attempt if facts is None else None
        event = AuditEvent(
            kind="request",
            time=(facts.time_text or rfc3339_ms(facts.time))
            if facts
            else rfc3339_ms(datetime.fromtimestamp(self._clock(), UTC)),
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
            policy_revision=(
                decision.policy_revision if decision else trace.policy_revision or self._revision()
            ),
            policy_input_sha256=trace.input_sha256,
            policy_reasons=tuple(decision.reasons) if decision else (),
            engine=decision.engine or None if decision else None,
        )
        self.audit.append(event)
        self._count(route, event.decision, reason)
        for stage, ns in trace.stages.items():
            self._stage(stage).observe(ns / 1e9)
        self._latency(route).observe(latency_us / 1e6)
        if not log.is_enabled_for(logging.INFO):  # skip building the line at all
            return
        log.info(
            "request",
            request_id=trace.request_id,
            route=route,
            source=event.source_spiffe_id,
            user=event.user_subject,
            device=event.device_id,
            method=event.method,
            path=event.path,
            decision=event.decision,
            reason=reason,
            status=status,
            latency_us=latency_us,
            stages_us={k: v // 1000 for k, v in trace.stages.items()},
            cached=decision.cached if decision else None,
        )

    def _count(self, route: str, decision: str, reason: str) -> None:
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
    def record_unparsable(
        self, source_address: str, peer: PeerIdentity | None, status: int, reason: str
    ) -> str:
        """A request the HTTP parser refused (bad framing, header line too long)."""
        request_id = os.urandom(16).hex()
        now = datetime.fromtimestamp(self._clock(), UTC)
        self.audit.append(
            AuditEvent(
                kind="request",
                time=rfc3339_ms(now),
                request_id=request_id,
                source_address=source_address,
                reason=reason,
                decision="deny",
                status=status,
                latency_us=0,
                source_spiffe_id=peer.spiffe_id if peer else None,
                source_cert_sha256=peer.fingerprint_sha256 if peer else None,
                policy_revision=self._revision(),
            )
        )
        self._count("-", "deny", reason)
        log.info(
            "request",
            request_id=request_id,
            source=peer.spiffe_id if peer else None,
            decision="deny",
            reason=reason,
            status=status,
        )
        return request_id

    def record_tls_rejected(
        self,
        source_address: str,
        reason: str,
        peer_cert_sha256: str | None,
        spiffe_id: str | None,
        count: int = 1,
    ) -> None:
        """`count` > 1: that many repeats, aggregated (server.rejections)."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        self.audit.append(
            AuditEvent(
                kind="tls_rejected",
                time=rfc3339_ms(now),
                request_id=os.urandom(16).hex(),
                source_address=source_address,
                reason=reason,
                decision="deny",
                status=0,
                latency_us=0,
                source_spiffe_id=spiffe_id,
                source_cert_sha256=peer_cert_sha256,
                policy_reasons=() if count == 1 else (f"count={count}",),
            )
        )
        self.metrics.tls_handshake_failures.labels(reason).inc(count)
        log.info(
            "tls_rejected",
            source_address=source_address,
            reason=reason,
            cert_sha256=peer_cert_sha256,
            count=count,
        )
