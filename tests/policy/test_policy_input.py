"""The policy input document: exactly the versioned contract, from verified data only."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st
from policy_support import make_input

from ztproxy.policy.cache import cache_key
from ztproxy.policy.canonical import stable_view
from ztproxy.stages.policy_input import input_digest, rfc3339_ms


def test_document_shape() -> None:
    doc = make_input(query={"limit": ("10",)})
    assert doc == {
        "version": 1,
        "request": {
            "id": "req-1",
            "method": "POST",
            "scheme": "https",
            "host": "payments.internal",
            "path": "/api/v1/charges",
            "parsed_path": ["api", "v1", "charges"],
            "query": {"limit": ["10"]},
            "headers": {"content-type": ["application/json"]},
            "protocol": "HTTP/1.1",
            "time": "2026-11-28T01:02:03.456Z",
            "upgrade": None,
        },
        "source": {
            "address": "127.0.0.1",
            "spiffe_id": "spiffe://corp.example/ns/prod/sa/checkout",
            "certificate": {
                "fingerprint_sha256": "ab" * 32,
                "subject": "O=corp",
                "issuer": "CN=corp dev CA",
                "not_after": "2027-01-01T00:00:00.000Z",
                "uri_sans": ["spiffe://corp.example/ns/prod/sa/checkout"],
                "dns_sans": [],
            },
        },
        "user": {
            "issuer": "https://idp.corp.example",
            "subject": "alice",
            "claims": {"roles": ["payments-operator"]},
        },
        "device": {
            "issuer": "https://devices.corp.example",
            "id": "laptop-7",
            "bound_to_client_cert": True,
            "claims": {"trust_level": 3, "managed": True},
        },
        "destination": {"service": "payments", "route": "payments-api"},
    }
    json.dumps(doc)  # plain JSON all the way down


def test_absent_user_and_device_are_null() -> None:
    doc = make_input(with_user=False, with_device=False)
    assert doc["user"] is None and doc["device"] is None


def test_credential_headers_never_shown() -> None:
    doc = make_input(
        headers={
            "authorization": ("Bearer abc",),
            "cookie": ("s=1",),
            "proxy-authorization": ("Basic x",),
            "accept": ("*/*",),
        }
    )
    assert doc["request"]["headers"] == {"accept": ["*/*"]}
    assert "abc" not in json.dumps(doc)


def test_time_is_utc_milliseconds() -> None:
    east = timezone(timedelta(hours=2))
    assert (
        rfc3339_ms(datetime(2026, 1, 1, 2, 0, 0, 999999, tzinfo=east)) == "2026-01-01T00:00:00.999Z"
    )
    assert rfc3339_ms(datetime(2026, 1, 1)) == "2026-01-01T00:00:00.000Z"


def test_digest_is_sha256_of_canonical_json() -> None:
    doc = make_input()
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert input_digest(doc) == hashlib.sha256(canonical.encode()).hexdigest()


def test_cache_key_ignores_only_id_and_time() -> None:
    a = make_input(request_id="a")
    b = make_input(request_id="b", when=datetime(2030, 1, 1))
    assert cache_key("p", "r", a) == cache_key("p", "r", b)
    assert input_digest(a) != input_digest(b)
    assert "id" not in stable_view(a)["request"] and "id" in a["request"]
    assert cache_key("p", "r", a) != cache_key("p", "r2", a)
    assert cache_key("p", "r", a) != cache_key("q", "r", a)


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=6))
def test_digest_independent_of_key_order(d: dict[str, str]) -> None:
    reordered = dict(reversed(list(d.items())))
    assert input_digest({"request": d}) == input_digest({"request": reordered})
