"""The redaction processor: the second line of defence behind allow-listed log fields."""

from __future__ import annotations

from ztproxy.ops.logs import MASK, redact

JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"


def test_secret_named_fields_are_masked() -> None:
    event = redact(
        None,
        "info",
        {
            "event": "x",
            "token": "abc",
            "Authorization": "Bearer q",
            "cookie": "s=1",
            "private_key_path": "/k",
            "token_sha256": "ab12",
            "route": "r",
        },
    )
    assert event["token"] == MASK and event["Authorization"] == MASK
    assert event["cookie"] == MASK and event["private_key_path"] == MASK
    assert event["token_sha256"] == "ab12" and event["route"] == "r"


def test_jwt_and_pem_values_masked_anywhere() -> None:
    event = redact(
        None,
        "info",
        {
            "event": "x",
            "detail": f"bad token {JWT} here",
            "nested": {"a": [JWT, "ok"], "secret": 1},
            "pem": "-----BEGIN PRIVATE KEY-----\nMII...",
        },
    )
    assert JWT not in str(event)
    assert event["detail"] == f"bad token {MASK} here"
    assert event["nested"] == {"a": [MASK, "ok"], "secret": MASK}
    assert event["pem"] == MASK
