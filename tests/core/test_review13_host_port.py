"""Review of issue 13: a Host port out of range was accepted (the policy saw
"payments.internal", the upstream got "payments.internal:99999999999999999999")."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from ztproxy.errors import BadRequest
from ztproxy.model import Route
from ztproxy.stages.request import build_request_facts

ROUTES = (Route(name="all", service="web", upstream="http://127.0.0.1:1"),)


def _host_of(host: str) -> str:
    facts = build_request_facts(
        request_id="r1",
        method="GET",
        raw_target="/x",
        version="HTTP/1.1",
        headers=CIMultiDictProxy(CIMultiDict(Host=host)),
        source_address="127.0.0.1",
        now=datetime(2026, 11, 28, tzinfo=UTC),
        routes=ROUTES,
        max_header_bytes=65536,
        hidden_headers=frozenset(),
    )
    return facts.host


@pytest.mark.parametrize(
    "host",
    [
        "payments.internal:65536",
        "payments.internal:99999999999999999999",
        "payments.internal:0065535",
        "[::1]:70000",
        "a" * 300 + ":65536",
    ],
)
def test_host_port_out_of_range_is_refused(host: str) -> None:
    with pytest.raises(BadRequest) as exc:
        _host_of(host)
    assert exc.value.reason == "bad_host"


@pytest.mark.parametrize(
    "host",
    ["payments.internal:65535", "payments.internal:0", "payments.internal:8443", "[::1]:443"],
)
def test_host_port_in_range_is_kept_apart(host: str) -> None:
    assert _host_of(host) in ("payments.internal", "[::1]")
