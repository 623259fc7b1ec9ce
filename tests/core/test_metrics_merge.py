"""The supervisor's /metrics: every worker's exposition merged into one (issue 15: each
scrape reached one worker, so six scrapes of 20 requests summed to 3, 3, 3, 3, 3, 5)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ztproxy.metrics import Merged, Metrics, merge_expositions


def _worker(requests: int, in_flight: int, jwks_age: float, latency: float) -> str:
    m = Metrics()
    for _ in range(requests):
        m.requests.labels("payments-api", "allow", "policy_allow").inc()
        m.request_seconds.labels("payments-api").observe(latency)
    m.in_flight.set(in_flight)
    m.jwks_age_seconds.labels("dev-sso").set(jwks_age)
    m.audit_records.inc(requests)
    return generate_latest(m.registry).decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_counters_histograms_and_gauges_merge_by_their_kind() -> None:
    registry = CollectorRegistry()
    registry.register(
        Merged(merge_expositions([_worker(3, 1, 10.0, 0.002), _worker(5, 2, 40.0, 0.2)]))
    )
    merged = _samples(generate_latest(registry).decode())
    route = (("decision", "allow"), ("reason", "policy_allow"), ("route", "payments-api"))
    assert merged[("ztproxy_requests_total", route)] == 8
    assert merged[("ztproxy_audit_records_total", ())] == 8
    assert merged[("ztproxy_requests_in_flight", ())] == 3  # in flight: a sum
    assert merged[("ztproxy_jwks_age_seconds", (("issuer", "dev-sso"),))] == 40.0  # the oldest
    hist = (("route", "payments-api"),)
    assert merged[("ztproxy_request_seconds_count", hist)] == 8
    assert merged[("ztproxy_request_seconds_bucket", (("le", "0.0025"), *hist))] == 3
    assert merged[("ztproxy_request_seconds_bucket", (("le", "+Inf"), *hist))] == 8
    assert abs(merged[("ztproxy_request_seconds_sum", hist)] - (3 * 0.002 + 5 * 0.2)) < 1e-9


def test_created_timestamps_take_the_earliest() -> None:
    a = "# TYPE x counter\nx_total 1.0\nx_created 200.0\n"
    b = "# TYPE x counter\nx_total 2.0\nx_created 100.0\n"
    registry = CollectorRegistry()
    registry.register(Merged(merge_expositions([a, b])))
    merged = _samples(generate_latest(registry).decode())
    assert merged[("x_total", ())] == 3.0 and merged[("x_created", ())] == 100.0


def test_no_worker_answered_gives_an_empty_exposition() -> None:
    assert merge_expositions([]) == []
