"""Pure units without sockets: strict JSON, certificate binding, token carriers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from identity_support import b64u, headers

from ztproxy.errors import Unauthenticated
from ztproxy.identity import strictjson
from ztproxy.identity.binding import check_binding
from ztproxy.identity.carriers import bearer_token, check_query
from ztproxy.model import Binding

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200)
@given(JSON)
def test_strictjson_agrees_with_json_without_duplicates(value: object) -> None:
    assert strictjson.loads(json.dumps(value).encode()) == value


@pytest.mark.parametrize("doc", [b'{"a":1,"a":2}', b'{"x":{"a":1,"a":1}}', b'[{"a":1,"a":1}]'])
def test_strictjson_duplicates(doc: bytes) -> None:
    with pytest.raises(strictjson.DuplicateMember):
        strictjson.loads(doc)


@pytest.mark.parametrize(
    "doc",
    [
        b"NaN",
        b'{"exp": Infinity}',
        b"[-Infinity]",
        b"\xff",
        b"[" * 40 + b"]" * 40,
        b'{"a":' * 40 + b"1" + b"}" * 40,
    ],
)
def test_strictjson_refuses_non_json(doc: bytes) -> None:
    with pytest.raises(ValueError):
        strictjson.loads(doc)


def test_strictjson_brackets_inside_strings_are_not_depth() -> None:
    assert strictjson.loads(json.dumps({"a": "[" * 100}).encode()) == {"a": "[" * 100}


PEER = b64u(b"\x01" * 32)


def test_binding_rules() -> None:
    bound = {"cnf": {"x5t#S256": PEER}}
    assert check_binding(bound, "device", Binding.REQUIRED, PEER) is True
    assert check_binding(bound, "user", Binding.REQUIRED, PEER) is True
    assert check_binding({}, "user", Binding.REQUIRED, PEER) is False
    assert check_binding({}, "device", Binding.RELAXED, PEER) is False
    cases = [
        ({}, "device", Binding.REQUIRED, "unbound_device_token"),
        ({"cnf": {"x5t#S256": PEER + "="}}, "device", Binding.REQUIRED, "cert_binding_mismatch"),
        ({"cnf": {"x5t#S256": PEER.lower()}}, "user", Binding.RELAXED, "cert_binding_mismatch"),
        ({"cnf": {"x5t#S256": 1}}, "device", Binding.RELAXED, "cert_binding_mismatch"),
        ({"cnf": "x"}, "device", Binding.REQUIRED, "invalid_claim"),
        ({"cnf": {"jkt": "abc"}}, "device", Binding.RELAXED, "unsupported_binding"),
        ({"cnf": {"x5t#S256": "\ud800"}}, "device", Binding.REQUIRED, "cert_binding_mismatch"),
    ]
    for claims, kind, binding, reason in cases:
        with pytest.raises(Unauthenticated) as err:
            check_binding(claims, kind, binding, PEER)
        assert err.value.reason == reason, claims
    with pytest.raises(Unauthenticated):  # a peer without a thumbprint never matches
        check_binding({"cnf": {"x5t#S256": ""}}, "device", Binding.REQUIRED, "")


def test_bearer_token_parsing() -> None:
    assert bearer_token(headers(), "authorization") is None
    assert (
        bearer_token(headers(("Authorization", "Bearer abc.def.ghi")), "authorization")
        == "abc.def.ghi"
    )
    assert bearer_token(headers(("authorization", "BEARER  a.b.c ")), "Authorization") == "a.b.c"
    for value in ("Bearer", "Token a.b.c", "Bearer a b", "Bearer a,b", "Bearer\ta.b.c"):
        with pytest.raises(Unauthenticated) as err:
            bearer_token(headers(("Authorization", value)), "authorization")
        assert err.value.reason == "malformed_token", value


HEADER = b64u(json.dumps({"alg": "ES256", "kid": "k"}).encode())
PAYLOAD = b64u(json.dumps({"sub": "alice"}).encode())
NOT_A_HEADER = b64u(json.dumps({"name": "x"}).encode())


@pytest.mark.parametrize(
    "query",
    [
        f"t={HEADER}.{PAYLOAD}.sig",
        f"t={HEADER}.{PAYLOAD}.",
        f"{HEADER}.{PAYLOAD}.sig=1",
        f"a=1;x=prefix%20{HEADER}%2E{PAYLOAD}%2Esig",
        "access_token=opaque",
        "Id_Token=1",
        f"t={b64u(json.dumps({'alg': 'RSA-OAEP', 'enc': 'A256GCM'}).encode())}.e.k.iv.tag",
    ],
)
def test_query_tokens_found(query: str) -> None:
    with pytest.raises(Unauthenticated) as err:
        check_query(query)
    assert err.value.reason == "token_in_query"


@pytest.mark.parametrize(
    "query",
    [
        "",
        "limit=10&offset=20",
        "q=eyes.open.now",
        "file=report.v2.final.pdf",
        f"t={NOT_A_HEADER}.abc.def",
        "token=abc",
        "sort=-created_at",
        "ey" * 5000 + "." * 3,
    ],
)
def test_query_without_tokens(query: str) -> None:
    check_query(query)
