"""The loop-local metric types expose exactly what prometheus_client's own would."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ztproxy.metrics import _STAGE_BUCKETS, LoopCounter, LoopGauge, LoopHistogram, Metrics

BUCKETS = (*_STAGE_BUCKETS, 1e7)  # the real bounds, and one Go writes as 1e+07


def _lines(registry: CollectorRegistry) -> list[str]:
    """Exposition lines without comments and prometheus_client's `_created` samples."""
    return sorted(
        line
        for line in generate_latest(registry).decode().splitlines()
        if line and not line.startswith("#") and "_created" not in line
    )


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["x", "y"]), st.integers(1, 5)),
        max_size=30,
    )
)
def test_counter_exposition_matches_prometheus_client(incs: list[tuple[str, str, int]]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    mine = LoopCounter("t_requests", "doc", ["route", "result"], registry=ours)
    ref = Counter("t_requests", "doc", ["route", "result"], registry=theirs)
    for route, result, n in incs:
        mine.labels(route, result).inc(n)
        ref.labels(route=route, result=result).inc(n)
    assert _lines(ours) == _lines(theirs)


@given(st.lists(st.floats(0, 2e7, allow_nan=False) | st.sampled_from(BUCKETS), max_size=40))
def test_histogram_exposition_matches_prometheus_client(values: list[float]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    mine = LoopHistogram("t_seconds", "doc", ["stage"], buckets=BUCKETS, registry=ours)
    ref = Histogram("t_seconds", "doc", ["stage"], buckets=BUCKETS, registry=theirs)
    for v in values:  # a value equal to a bound counts in that bound's bucket (le)
        mine.labels("s").observe(v)
        ref.labels("s").observe(v)
    assert _lines(ours) == _lines(theirs)


def test_gauge_and_keyword_labels() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    g, ref = (
        LoopGauge("t_in_flight", "doc", registry=ours),
        Gauge("t_in_flight", "doc", registry=theirs),
    )
    for op in ("inc", "inc", "dec", "inc"):
        getattr(g, op)()
        getattr(ref, op)()
    assert _lines(ours) == _lines(theirs) == ["t_in_flight 2.0"]
    c = LoopCounter("t_c", "doc", ["kind", "result"], registry=ours)
    assert c.labels(kind="user", result="ok") is c.labels("user", "ok")
    with pytest.raises(ValueError):
        c.labels("user")
    with pytest.raises(ValueError):
        c.labels(kind="user", other="x")
    with pytest.raises(ValueError):
        c.labels("user", result="ok")


def test_sample_values_readable_by_name() -> None:
    m = Metrics()
    m.token_cache.labels(result="hit").inc()
    m.token_cache.labels(result="hit").inc()
    m.stage_seconds.labels("policy").observe(0.0002)
    get = m.registry.get_sample_value
    assert get("ztproxy_token_cache_total", {"result": "hit"}) == 2.0
    assert get("ztproxy_stage_seconds_count", {"stage": "policy"}) == 1.0
    assert get("ztproxy_stage_seconds_bucket", {"stage": "policy", "le": "0.00025"}) == 1.0
    assert get("ztproxy_stage_seconds_bucket", {"stage": "policy", "le": "0.0001"}) == 0.0
