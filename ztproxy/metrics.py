"""Prometheus metrics, one `Metrics` object per process, injected into each part.

No module-level registry: a `Metrics` owns its `CollectorRegistry`, so tests and
several proxies in one process do not collide. Every subsystem takes an optional
`metrics` argument and uses `Metrics()` (a private registry) when none is given.
Label values are bounded sets (route names, reason codes, issuer names from the
config), never request data.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Sub-millisecond stages need fine buckets; upstream time needs coarse ones.
_STAGE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                  0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # pipeline
        self.requests = Counter("ztproxy_requests", "Requests by route, decision and reason",
                                ["route", "decision", "reason"], registry=r)
        self.stage_seconds = Histogram("ztproxy_stage_seconds", "Time spent per pipeline stage",
                                       ["stage"], buckets=_STAGE_BUCKETS, registry=r)
        self.request_seconds = Histogram("ztproxy_request_seconds",
                                         "Whole request time until response headers",
                                         ["route"], buckets=_STAGE_BUCKETS, registry=r)
        self.in_flight = Gauge("ztproxy_requests_in_flight", "Requests being handled",
                               registry=r)
        self.tls_handshake_failures = Counter("ztproxy_tls_handshake_failures",
                                              "Rejected TLS handshakes by reason", ["reason"],
                                              registry=r)
        self.upstream_errors = Counter("ztproxy_upstream_errors", "Upstream failures",
                                       ["route", "reason"], registry=r)
        # identity
        self.token_verifications = Counter("ztproxy_token_verifications",
                                           "Token verifications by issuer kind and result",
                                           ["kind", "result"], registry=r)
        self.token_cache = Counter("ztproxy_token_cache", "Verified-token cache lookups",
                                   ["result"], registry=r)
        self.jwks_fetches = Counter("ztproxy_jwks_fetches", "JWKS fetches by issuer and result",
                                    ["issuer", "result"], registry=r)
        self.jwks_age_seconds = Gauge("ztproxy_jwks_age_seconds",
                                      "Seconds since the issuer's keys were last refreshed",
                                      ["issuer"], registry=r)
        # policy
        self.policy_decisions = Counter("ztproxy_policy_decisions",
                                        "Decisions by engine and outcome",
                                        ["engine", "outcome"], registry=r)
        self.policy_seconds = Histogram("ztproxy_policy_engine_seconds",
                                        "Policy engine evaluation time (cache misses)",
                                        ["engine"], buckets=_STAGE_BUCKETS, registry=r)
        self.policy_errors = Counter("ztproxy_policy_errors", "Policy engine errors by reason",
                                     ["engine", "reason"], registry=r)
        self.policy_breaker_open = Gauge("ztproxy_policy_breaker_open",
                                         "1 while the circuit breaker denies without asking",
                                         registry=r)
        self.decision_cache = Counter("ztproxy_decision_cache", "Decision cache lookups",
                                      ["result"], registry=r)
        self.policy_reloads = Counter("ztproxy_policy_reloads", "Policy reloads by result",
                                      ["result"], registry=r)
        # audit
        self.audit_records = Counter("ztproxy_audit_records", "Audit records written",
                                     registry=r)
        self.audit_checkpoints = Counter("ztproxy_audit_checkpoints", "Checkpoints signed",
                                         registry=r)
        self.audit_queue_depth = Gauge("ztproxy_audit_queue_depth",
                                       "Records waiting for the writer thread", registry=r)
        self.audit_failures = Counter("ztproxy_audit_failures",
                                      "Audit write failures and refusals", ["reason"],
                                      registry=r)
