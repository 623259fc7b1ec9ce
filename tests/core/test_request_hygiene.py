"""Issue 13 at the stage level: method tokens, Host spelling, header bytes, claims."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from ztproxy.errors import BadRequest, Unauthenticated
from ztproxy.model import Credentials, Principal, Route
from ztproxy.stages.audit_fields import attempted_path, audited_path, escaped
from ztproxy.stages.headers import check_claims_header_safe
from ztproxy.stages.request import build_request_facts

ROUTES = (
    Route(name="all", service="web", upstream="http://127.0.0.1:1"),
    Route(name="k", service="k", upstream="http://127.0.0.1:2", host="kelvin.internal"),
)


def facts(*headers: tuple[str, str], method: str = "GET", target: str = "/x"):  # type: ignore[no-untyped-def]
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
        max_header_bytes=4096,
        hidden_headers=frozenset(),
    )


@pytest.mark.parametrize("method", ["get", "GEt", "G\x00T", "GET ", ""])
def test_method_must_be_an_uppercase_token(method: str) -> None:
    with pytest.raises(BadRequest) as err:
        facts(method=method)
    assert err.value.reason == "bad_method"


def test_custom_uppercase_methods_pass() -> None:
    assert facts(method="PROPFIND").method == "PROPFIND"


@pytest.mark.parametrize(
    "host", ["\u212aelvin.internal", "caf\u00e9.internal", "kelvin.internal..", "."]
)
def test_non_ascii_or_doubly_dotted_host_refused(host: str) -> None:
    with pytest.raises(BadRequest) as err:
        facts(("Host", host))
    assert err.value.reason == "bad_host"


def test_one_trailing_dot_is_the_same_host() -> None:
    f = facts(("Host", "Kelvin.Internal.:8443"))
    assert (f.host, f.route.name) == ("kelvin.internal", "k")


def test_header_value_not_utf8_is_400() -> None:
    with pytest.raises(BadRequest) as err:
        facts(("Host", "a"), ("X-Note", b"caf\xe9".decode("utf-8", "surrogateescape")))
    assert err.value.reason == "header_not_utf8"
    assert facts(("Host", "a"), ("X-Note", "caf\u00e9")).headers["x-note"] == ("caf\u00e9",)


def test_upgrade_in_facts() -> None:
    assert (
        facts(
            ("Host", "a"), ("Upgrade", "websocket"), ("Connection", "keep-alive, Upgrade")
        ).upgrade
        == "websocket"
    )
    assert facts(("Host", "a"), ("Upgrade", "h2c"), ("Connection", "Upgrade")).upgrade is None
    assert facts(("Host", "a")).upgrade is None


@pytest.mark.parametrize("sub", ["a\r\nb", "a\nb", "a\x00", "a\tb", "a\x7f", "a\ud800"])
def test_claims_must_be_header_safe(sub: str) -> None:
    user = Principal(
        kind="user", issuer="i", subject=sub, claims={}, token_sha256="x", expires_at=0
    )
    with pytest.raises(Unauthenticated) as err:
        check_claims_header_safe(Credentials(user=user))
    assert err.value.reason == "claim_not_header_safe"
    check_claims_header_safe(
        Credentials(
            user=Principal(
                kind="user",
                issuer="i",
                subject="alice \u00e9",
                claims={},
                token_sha256="x",
                expires_at=0,
            )
        )
    )


def test_audit_fields() -> None:
    jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"
    assert jwt not in audited_path(f"/t/{jwt}/x") and audited_path("/plain") == "/plain"
    assert attempted_path(f"/a\x00/{jwt}?token={jwt}").startswith("/a\\x00/[jwt:sha256:")
    assert "token" not in attempted_path("/a?token=x")
    assert escaped("x" * 5000) == "x" * 1024 + "..."
