"""The request pipeline: the one module that knows the order of the stages.

    audit log accepting?          -> else 503 audit_unavailable
    peer identity                 seams.PeerLookup      -> PeerIdentity | 401 (closes)
    canonical request + route     stages.request        -> RequestFacts | 400/404/431
    user + device credentials     seams.Authenticator   -> Credentials  | 401/503
    policy input                  stages.policy_input   -> dict
    decision                      seams.Decider         -> Decision     | 403/503
    forward (HTTP or WebSocket)   stages.forward        -> response     | 502/504/413
    audit record                  outcome.Outcome       (always, exactly once)

Each request runs under ONE runtime (`runtime.Runtime`: config, trust store, routes,
authenticator, decider, upstream session), read once at its start; a reload publishes a
new one and never changes the one a request is using. What a request's outcome does to
the audit log, the metrics and the log lives in `outcome.py`.

Every failure is a `Rejection` with a status and a stable reason code; the client gets
a short generic JSON body with the request id, the log and the audit record get the
reason. Anything unexpected is caught once, here, and denies (500): nothing that goes
wrong can let a request through.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from aiohttp import web

from .errors import Rejection, ServiceUnavailable
from .model import Credentials, Decision, RequestFacts
from .outcome import Outcome, Trace
from .runtime import Runtime, RuntimeRef
from .seams import AuditSink, PeerLookup
from .stages.forward import ForwardResult, forward
from .stages.headers import asserted_headers, check_claims_header_safe, upstream_headers
from .stages.limits import ConcurrencyLimits
from .stages.policy_input import build_policy_input, input_digest
from .stages.request import build_request_facts
from .stages.respond import denied_response, error_response, rejection_response
from .stages.websocket import LiveSessions, is_websocket_upgrade, proxy_websocket, session_deadline

log = structlog.get_logger("ztproxy.request")
# Config-independent: the text of an HTTP version tuple (the parser knows only a few).
_PROTOCOLS: dict[tuple[int, int], str] = {}


def _protocol(version: tuple[int, int]) -> str:
    """ "HTTP/1.1" for (1, 1): made once per version seen."""
    text = _PROTOCOLS.get(version)
    if text is None:
        text = _PROTOCOLS[version] = f"HTTP/{version[0]}.{version[1]}"
    return text


@dataclass(slots=True)
class Pipeline:
    runtime: RuntimeRef
    audit: AuditSink
    peer_lookup: PeerLookup
    outcome: Outcome
    clock: Callable[[], float] = time.time
    header_phase: dict[str, int] = field(default_factory=dict)  # source -> connections
    limits: ConcurrencyLimits = field(default_factory=ConcurrencyLimits)
    sessions: LiveSessions = field(default_factory=LiveSessions)  # recheck() on reload

    # -- the request path -------------------------------------------------------------
    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        rt = self.runtime.current
        trace = self.outcome.begin(request.remote or "")
        trace.policy_revision = rt.decider.revision
        status, reason = 500, "internal_error"
        try:
            result = await self._run(request, trace, rt)
            status = result.status
            reason = (
                "upstream_aborted"
                if result.aborted
                else trace.decision.reason
                if trace.decision
                else "allowed"
            )
            return result.response
        except Rejection as exc:
            status, reason = exc.status, exc.reason
            return rejection_response(exc, trace.request_id)
        except Exception:  # noqa: BLE001 - the one outermost handler: it never allows
            log.exception("internal_error", request_id=trace.request_id)
            return error_response(500, trace.request_id)
        finally:
            self.outcome.finish(trace, status, reason)

    async def _run(self, request: web.BaseRequest, trace: Trace, rt: Runtime) -> ForwardResult:
        if not self.audit.accepting():
            raise ServiceUnavailable("audit_unavailable")
        t0 = time.perf_counter_ns()
        now = self.clock()
        trace.peer = self.peer_lookup(request, rt.trust, now)
        cfg = rt.config
        trace.attempt = (request.method, request.headers.get("Host"), request.raw_path)
        facts = build_request_facts(
            request_id=trace.request_id,
            method=request.method,
            raw_target=request.raw_path,
            version=_protocol(request.version),
            headers=request.headers,
            source_address=trace.source_address,
            now=datetime.fromtimestamp(now, UTC),
            routes=cfg.routes,
            max_header_bytes=cfg.limits.max_header_bytes,
            hidden_headers=rt.headers.hidden,
            strip_prefixes=cfg.headers.strip_prefixes,
        )
        trace.facts = facts
        t1 = time.perf_counter_ns()
        trace.stages["request"] = t1 - t0
        creds = await rt.authenticator.authenticate(
            request.headers, facts.raw_query, facts.route, trace.peer
        )
        trace.creds = creds
        check_claims_header_safe(creds)
        t2 = time.perf_counter_ns()
        trace.stages["identity"] = t2 - t1
        doc = build_policy_input(facts, trace.peer, creds)
        trace.input_sha256 = input_digest(doc)
        trace.doc = doc
        decision = await rt.decider.decide(
            facts.route.decision_path or cfg.policy.decision_path, doc
        )
        trace.decision = decision
        t3 = time.perf_counter_ns()
        trace.stages["policy"] = t3 - t2
        if not decision.allowed:
            resp = denied_response(decision, trace.request_id)
            return ForwardResult(resp, resp.status)
        assert trace.peer is not None
        release = self.limits.acquire(
            trace.peer.spiffe_id, facts.route, cfg.limits.max_concurrent_per_caller
        )
        try:
            result = await self._forward(request, trace, rt, facts, creds, decision)
        finally:
            release()
        trace.stages["upstream"] = time.perf_counter_ns() - t3
        return result

    async def _forward(
        self,
        request: web.BaseRequest,
        trace: Trace,
        rt: Runtime,
        facts: RequestFacts,
        creds: Credentials,
        decision: Decision,
    ) -> ForwardResult:
        route, cfg = facts.route, rt.config
        assert trace.peer is not None and rt.session is not None
        headers = upstream_headers(
            request.headers,
            stripped=rt.headers.stripped,
            credential_headers=rt.headers.not_forwarded,
            asserted=asserted_headers(
                cfg.headers, trace.peer, creds, trace.source_address, trace.request_id
            ),
            policy_headers=decision.headers,
            strip_prefixes=cfg.headers.strip_prefixes,
            passed=route.pass_headers,
        )
        target = f"{facts.path}?{facts.raw_query}" if facts.raw_query else facts.path
        ssl_ctx = rt.upstream_ssl.get(route.name)
        if route.websocket and is_websocket_upgrade(request.headers):
            if trace.doc is None:  # set before every decision
                raise ValueError("no policy input")
            live = self.sessions.open(route.decision_path or cfg.policy.decision_path, trace.doc)
            try:
                return await proxy_websocket(
                    request,
                    upstream_url=route.upstream,
                    target=target,
                    headers=headers,
                    session=rt.session,
                    ssl_context=ssl_ctx,
                    connect_timeout=cfg.timeouts.upstream_connect_seconds,
                    deadline=session_deadline(creds, trace.peer.not_after),
                    stop=live.stop,
                    clock=self.clock,
                )
            finally:
                self.sessions.close(live)
        return await forward(
            request,
            upstream_url=route.upstream,
            target=target,
            headers=headers,
            session=rt.session,
            ssl_context=ssl_ctx,
            max_body_bytes=cfg.limits.max_body_bytes,
            response_headers=dict(decision.response_headers),
            body_idle=cfg.timeouts.body_idle_seconds,
            body_total=cfg.timeouts.body_total_seconds,
        )
