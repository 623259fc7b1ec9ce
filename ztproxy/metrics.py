"""Prometheus metrics, one `Metrics` object per process, injected into each part.

No module-level registry: a `Metrics` owns its `CollectorRegistry`, so tests and
several proxies in one process do not collide. Every subsystem takes an optional
`metrics` argument and uses `Metrics()` (a private registry) when none is given.
Label values are bounded sets (route names, reason codes, issuer names from the
config), never request data.

Two kinds of metric:
- the request path's own (requests, stages, token and decision cache, decisions):
  `LoopCounter`, `LoopGauge`, `LoopHistogram` below. They are written only from the
  event loop thread that serves requests, so a child is a plain number with no lock;
  a scrape (the admin endpoint runs on the same loop) reads them through one
  registered collector. prometheus_client's own types take a mutex on every
  increment and check the label set on every call: a profile of the proxy under load
  found them at several percent of all samples.
- everything else (audit writer thread, JWKS refresh, TLS failures, reloads):
  prometheus_client's types, safe from any thread.
The exposition is the same either way: `<name>_total` for counters, `_bucket` /
`_sum` / `_count` for histograms.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

# Sub-millisecond stages need fine buckets; upstream time needs coarse ones.
_STAGE_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


# == loop-local metrics ===================================================================
class LoopValue:
    """One counter or gauge child: a number, changed only on the event loop thread."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = float(value)


class LoopBuckets:
    """One histogram child: per-bucket counts (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # le semantics: a value equal to a bound belongs to that bucket
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class _Family:
    """Label handling shared by the loop-local types: children made once per label
    set and kept (label values are bounded sets by the module's rule)."""

    kind = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], object] = {}
        self._plain = None if self.labelnames else self._child()
        registry.register(self)  # type: ignore[arg-type]

    def _child(self) -> object:
        raise NotImplementedError

    def _labelled(self, values: tuple[str, ...], kwargs: dict[str, str]) -> object:
        if kwargs:
            if values:
                raise ValueError("labels() takes positional or keyword values, not both")
            try:
                values = tuple(kwargs.pop(n) for n in self.labelnames)
            except KeyError as exc:
                raise ValueError(f"{self.name}: missing label {exc}") from None
            if kwargs:
                raise ValueError(f"{self.name}: unknown labels {sorted(kwargs)}")
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._child()
        return child

    def _all(self) -> Iterator[tuple[list[str], object]]:
        if self._plain is not None:
            yield [], self._plain
        for key, child in list(self._children.items()):
            yield list(key), child

    def describe(self) -> list[Metric]:
        return []  # families are built at collect time; nothing to check up front


class LoopCounter(_Family):
    def _child(self) -> LoopValue:
        return LoopValue()

    def labels(self, *values: str, **kwargs: str) -> LoopValue:
        child = self._labelled(values, kwargs)
        assert isinstance(child, LoopValue)
        return child

    def inc(self, amount: float = 1.0) -> None:
        assert isinstance(self._plain, LoopValue), f"{self.name} has labels"
        self._plain.value += amount

    def collect(self) -> list[Metric]:
        kind = GaugeMetricFamily if isinstance(self, LoopGauge) else CounterMetricFamily
        family = kind(self.name, self.documentation, labels=self.labelnames)
        for labels, child in self._all():
            assert isinstance(child, LoopValue)
            family.add_metric(labels, child.value)
        return [family]


class LoopGauge(LoopCounter):
    def dec(self, amount: float = 1.0) -> None:
        assert isinstance(self._plain, LoopValue), f"{self.name} has labels"
        self._plain.value -= amount

    def set(self, value: float) -> None:
        assert isinstance(self._plain, LoopValue), f"{self.name} has labels"
        self._plain.value = float(value)


class LoopHistogram(_Family):
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.bounds = tuple(sorted(float(b) for b in buckets if b != float("inf")))
        super().__init__(name, documentation, labelnames, registry=registry)

    def _child(self) -> LoopBuckets:
        return LoopBuckets(self.bounds)

    def labels(self, *values: str, **kwargs: str) -> LoopBuckets:
        child = self._labelled(values, kwargs)
        assert isinstance(child, LoopBuckets)
        return child

    def collect(self) -> list[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        edges = [str(floatToGoString(b)) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        for labels, child in self._all():
            assert isinstance(child, LoopBuckets)
            running, cumulative = 0, []
            for edge, count in zip(edges, list(child.counts), strict=True):
                running += count
                cumulative.append((edge, running))
            family.add_metric(labels, cumulative, child.sum)
        return [family]


# == the process's metrics ================================================================
class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # pipeline (event loop only)
        self.requests = LoopCounter(
            "ztproxy_requests",
            "Requests by route, decision and reason",
            ["route", "decision", "reason"],
            registry=r,
        )
        self.stage_seconds = LoopHistogram(
            "ztproxy_stage_seconds",
            "Time spent per pipeline stage",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.request_seconds = LoopHistogram(
            "ztproxy_request_seconds",
            "Whole request time, by route",
            ["route"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.in_flight = LoopGauge(
            "ztproxy_requests_in_flight", "Requests being handled", registry=r
        )
        self.tls_handshake_failures = Counter(
            "ztproxy_tls_handshake_failures",
            "Rejected TLS handshakes by reason",
            ["reason"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "ztproxy_upstream_errors", "Upstream failures", ["route", "reason"], registry=r
        )
        # identity (the lookups and verifications on the event loop)
        self.token_verifications = LoopCounter(
            "ztproxy_token_verifications",
            "Token verifications by issuer kind and result",
            ["kind", "result"],
            registry=r,
        )
        self.token_cache = LoopCounter(
            "ztproxy_token_cache", "Verified-token cache lookups", ["result"], registry=r
        )
        self.jwks_fetches = Counter(
            "ztproxy_jwks_fetches",
            "JWKS fetches by issuer and result",
            ["issuer", "result"],
            registry=r,
        )
        self.jwks_age_seconds = Gauge(
            "ztproxy_jwks_age_seconds",
            "Seconds since the issuer's keys were last refreshed",
            ["issuer"],
            registry=r,
        )
        # policy (decisions on the event loop)
        self.policy_decisions = LoopCounter(
            "ztproxy_policy_decisions",
            "Decisions by engine and outcome",
            ["engine", "outcome"],
            registry=r,
        )
        self.policy_seconds = LoopHistogram(
            "ztproxy_policy_engine_seconds",
            "Policy engine evaluation time (cache misses)",
            ["engine"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.policy_errors = Counter(
            "ztproxy_policy_errors",
            "Policy engine errors by reason",
            ["engine", "reason"],
            registry=r,
        )
        self.policy_breaker_open = Gauge(
            "ztproxy_policy_breaker_open",
            "1 while the circuit breaker denies without asking",
            registry=r,
        )
        self.decision_cache = LoopCounter(
            "ztproxy_decision_cache", "Decision cache lookups", ["result"], registry=r
        )
        self.policy_reloads = Counter(
            "ztproxy_policy_reloads", "Policy reloads by result", ["result"], registry=r
        )
        self.policy_reload_failures = Counter(
            "ztproxy_policy_reload_failures", "Policy reloads refused (old policy kept)", registry=r
        )
        self.policy_bundle_failures = Counter(
            "ztproxy_policy_bundle_failures",
            "Policy bundles refused, by reason (the active policy is kept)",
            ["reason"],
            registry=r,
        )
        self.policy_bundle_activations = Counter(
            "ztproxy_policy_bundle_activations", "Policy bundles activated", registry=r
        )
        self.policy_bundle_info = Gauge(
            "ztproxy_policy_bundle_info",
            "1 for the active bundle's policy_revision (manifest revision @ SHA-256)",
            ["policy_revision"],
            registry=r,
        )
        # audit (the writer thread: thread-safe types)
        self.audit_records = Counter("ztproxy_audit_records", "Audit records written", registry=r)
        self.audit_checkpoints = Counter(
            "ztproxy_audit_checkpoints", "Checkpoints signed", registry=r
        )
        self.audit_queue_depth = Gauge(
            "ztproxy_audit_queue_depth", "Records waiting for the writer thread", registry=r
        )
        self.audit_failures = Counter(
            "ztproxy_audit_failures", "Audit write failures and refusals", ["reason"], registry=r
        )


# == the supervisor's view: many workers' expositions as one ===============================
# Gauges whose sum over workers means nothing: the supervisor reports the largest.
_GAUGES_BY_MAX = frozenset(
    {"ztproxy_jwks_age_seconds", "ztproxy_policy_breaker_open", "ztproxy_policy_bundle_info"}
)


def merge_expositions(texts: Sequence[str]) -> list[Metric]:
    """Each worker's /metrics text (Prometheus text format) merged into one set of
    families: counters, histogram buckets, sums and counts add up across workers;
    `_created` samples take the earliest; the gauges in `_GAUGES_BY_MAX` the largest;
    other gauges (in flight, queue depth) add up. Families keep their first-seen order."""
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text):
            if fam.name not in families:
                families[fam.name] = Metric(fam.name, fam.documentation, fam.type)
                values[fam.name] = {}
            merged = values[fam.name]
            for sample in fam.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                old = merged.get(key)
                if old is None:
                    merged[key] = sample.value
                elif sample.name.endswith("_created"):
                    merged[key] = min(old, sample.value)
                elif fam.type == "gauge" and fam.name in _GAUGES_BY_MAX:
                    merged[key] = max(old, sample.value)
                else:
                    merged[key] = old + sample.value
    out = []
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
        out.append(family)
    return out


class Merged:
    """A collector that yields already merged families (for `generate_latest`)."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> list[Metric]:
        return self._families

    def describe(self) -> list[Metric]:
        return []
