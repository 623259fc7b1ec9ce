"""Every invalid result shape is a deny `policy_result_invalid` (403); valid ones parse."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ztproxy.policy.engine import UNDEFINED, RawResult
from ztproxy.policy.result import parse_result

INVALID_SHAPES: list[tuple[str, RawResult]] = [
    ("undefined", UNDEFINED),
    ("null", RawResult(True, None)),
    ("string_true", RawResult(True, "true")),
    ("one", RawResult(True, 1)),
    ("zero", RawResult(True, 0)),
    ("list_true", RawResult(True, [True])),
    ("empty_object", RawResult(True, {})),
    ("allowed_string", RawResult(True, {"allowed": "true"})),
    ("allowed_one", RawResult(True, {"allowed": 1})),
    ("allowed_null", RawResult(True, {"allowed": None})),
    ("allow_not_allowed", RawResult(True, {"allow": True})),
    ("http_error_true", RawResult(True, True, http_status=500)),
    ("http_error_object", RawResult(True, {"allowed": True}, http_status=503)),
    ("reasons_string", RawResult(True, {"allowed": False, "reasons": "nope"})),
    ("reasons_numbers", RawResult(True, {"allowed": False, "reasons": [1]})),
    ("status_string", RawResult(True, {"allowed": False, "http_status": "403"})),
    ("status_bool", RawResult(True, {"allowed": False, "http_status": True})),
    ("status_range", RawResult(True, {"allowed": False, "http_status": 99})),
    ("headers_list", RawResult(True, {"allowed": True, "headers": ["x"]})),
    ("header_value_int", RawResult(True, {"allowed": True, "headers": {"x-a": 1}})),
    ("header_crlf", RawResult(True, {"allowed": True, "headers": {"x-a": "a\r\nx-b: c"}})),
    ("header_name_space", RawResult(True, {"allowed": True, "headers": {"x a": "b"}})),
    (
        "response_header_nul",
        RawResult(True, {"allowed": False, "response_headers_to_add": {"x": "a\0"}}),
    ),
    ("body_object", RawResult(True, {"allowed": False, "body": {"a": 1}})),
]


@pytest.mark.parametrize(("name", "raw"), INVALID_SHAPES, ids=[n for n, _ in INVALID_SHAPES])
def test_invalid_shapes_deny(name: str, raw: RawResult) -> None:
    decision, problem = parse_result(raw, "rev")
    assert decision.allowed is False
    assert decision.reason == "policy_result_invalid"
    assert decision.http_status == 403
    assert decision.policy_revision == "rev"
    assert problem


def test_booleans() -> None:
    yes, p1 = parse_result(RawResult(True, True), "r")
    no, p2 = parse_result(RawResult(True, False), "r")
    assert (yes.allowed, yes.reason, p1) == (True, "policy_allow", None)
    assert (no.allowed, no.reason, no.http_status, p2) == (False, "policy_deny", None, None)


def test_full_object() -> None:
    d, problem = parse_result(
        RawResult(
            True,
            {
                "allowed": False,
                "reasons": ["a", "b"],
                "http_status": 451,
                "headers": {"X-Tenant": "acme"},
                "response_headers_to_add": {"x-why": "policy"},
                "body": "no",
                "dynamic_metadata": {"ignored": True},
            },
        ),
        "rev",
    )
    assert problem is None
    assert (d.allowed, d.reason, d.reasons, d.http_status, d.body) == (
        False,
        "policy_deny",
        ("a", "b"),
        451,
        "no",
    )
    assert dict(d.headers) == {"x-tenant": "acme"}
    assert dict(d.response_headers) == {"x-why": "policy"}


def test_reasons_are_bounded() -> None:
    d, _ = parse_result(RawResult(True, {"allowed": False, "reasons": ["x" * 999] * 99}), "r")
    assert len(d.reasons) == 16 and all(len(r) == 200 for r in d.reasons)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["allowed", "reasons", "http_status", "headers", "body", "x"]),
            children,
            max_size=5,
        )
    ),
    max_leaves=12,
)


@given(json_values)
def test_only_true_or_allowed_true_allows(value: Any) -> None:
    d, _ = parse_result(RawResult(True, value), "r")
    if d.allowed:
        assert value is True or (isinstance(value, dict) and value.get("allowed") is True)
    json.dumps(list(d.reasons))  # always serialisable for the audit record


@given(json_values)
def test_http_error_never_allows(value: Any) -> None:
    d, _ = parse_result(RawResult(True, value, http_status=500), "r")
    assert d.allowed is False and d.reason == "policy_result_invalid"
