"""Request facts: framing checks the C parser leaves to us, and route matching."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from ztproxy.errors import BadRequest, HeadersTooLarge, RouteNotFound
from ztproxy.model import Route
from ztproxy.stages.request import build_request_facts, match_route

ROUTES = (
    Route(name="all", service="web", upstream="http://127.0.0.1:1"),
    Route(name="pay", service="payments", upstream="http://127.0.0.1:2", path_prefix="/pay"),
    Route(
        name="pay-admin",
        service="payadmin",
        upstream="http://127.0.0.1:3",
        path_prefix="/pay/admin/",
    ),
    Route(name="rep", service="reports", upstream="http://127.0.0.1:4", host="reports.internal"),
)


def facts(target: str = "/x", *headers: tuple[str, str], method: str = "GET"):
    hs = CIMultiDictProxy(CIMultiDict(headers or (("Host", "payments.internal"),)))
    return build_request_facts(
        request_id="r1",
        method=method,
        raw_target=target,
        version="HTTP/1.1",
        headers=hs,
        source_address="127.0.0.1",
        now=datetime(2026, 11, 28, tzinfo=UTC),
        routes=ROUTES,
        max_header_bytes=2048,
        hidden_headers=frozenset(),
    )


@pytest.mark.parametrize(
    "host,path,route",
    [
        ("a", "/", "all"),
        ("a", "/pay", "pay"),
        ("a", "/pay/x", "pay"),
        ("a", "/payx", "all"),
        ("a", "/pay/admin", "pay-admin"),
        ("a", "/pay/admin/x", "pay-admin"),
        ("reports.internal", "/pay/x", "rep"),
    ],
)
def test_route_matching(host: str, path: str, route: str) -> None:
    assert match_route(ROUTES, host, path).name == route


def test_no_route_is_404() -> None:
    with pytest.raises(RouteNotFound):
        match_route(ROUTES[1:2], "a", "/other")


@pytest.mark.parametrize(
    "headers,reason",
    [
        ((("Host", "a"), ("Host", "b")), "duplicate_host"),
        ((), "missing_host"),
        (
            (("Host", "a"), ("Content-Length", "1"), ("Content-Length", "1")),
            "duplicate_content_length",
        ),
        ((("Host", "a"), ("Content-Length", "1, 1")), "duplicate_content_length"),
        (
            (("Host", "a"), ("Transfer-Encoding", "chunked"), ("Content-Length", "3")),
            "transfer_encoding_with_content_length",
        ),
        ((("Host", "a"), ("Transfer-Encoding", "gzip, chunked")), "bad_transfer_encoding"),
        ((("Host", "a b"),), "bad_host"),
        ((("Host", "a:x"),), "bad_host"),
    ],
)
def test_framing_rejections(headers: tuple[tuple[str, str], ...], reason: str) -> None:
    hs = CIMultiDictProxy(CIMultiDict(headers))
    with pytest.raises(BadRequest) as err:
        build_request_facts(
            request_id="r",
            method="POST",
            raw_target="/",
            version="HTTP/1.1",
            headers=hs,
            source_address="x",
            now=datetime.now(UTC),
            routes=ROUTES,
            max_header_bytes=4096,
            hidden_headers=frozenset(),
        )
    assert err.value.reason == reason


def test_header_bytes_over_limit_is_431() -> None:
    with pytest.raises(HeadersTooLarge) as err:
        facts("/", ("Host", "a"), ("X-Big", "v" * 3000))
    assert err.value.status == 431


def test_connect_refused() -> None:
    with pytest.raises(BadRequest):
        facts("/", ("Host", "a"), method="CONNECT")


def test_facts_carry_canonical_values() -> None:
    f = facts("/pay/charges?limit=10", ("Host", "Payments.Internal:8443"), ("Accept", "x"))
    assert (f.host, f.path, f.raw_query, f.route.name) == (
        "payments.internal",
        "/pay/charges",
        "limit=10",
        "pay",
    )
    assert f.query == {"limit": ("10",)} and f.headers["accept"] == ("x",)
