"""One serialization of the policy input: the same bytes, both digests, read-only."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from policy_support import device, make_input

from ztproxy.model import Principal
from ztproxy.policy.cache import cache_key
from ztproxy.policy.canonical import canonical_bytes, stable_view
from ztproxy.policy.prepared import PreparedInput, fast_serialize, prepare, serialize
from ztproxy.stages.policy_input import input_digest

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=10,
)
# keys around the split points ("id", "time", "request") and on either side of them
keys = st.sampled_from(
    [
        "",
        "a",
        "headers",
        "host",
        "i",
        "id",
        "ida",
        "method",
        "r",
        "request",
        "requesu",
        "s",
        "scheme",
        "t",
        "time",
        "timf",
        "z",
        "é",
        "\U0001f600",
    ]
) | st.text(max_size=5)
requests = st.dictionaries(keys, json_values, max_size=8)
docs = st.dictionaries(keys, json_values, max_size=6).flatmap(
    lambda d: st.one_of(st.just(d), requests.map(lambda r: {**d, "request": r}))
)


@given(docs)
def test_serialization_is_the_canonical_bytes_of_doc_and_stable_view(doc: dict[str, Any]) -> None:
    full, stable = serialize(doc)
    assert full.encode() == canonical_bytes(doc)
    assert stable.encode() == canonical_bytes(stable_view(doc))
    json.loads(full)


@given(docs)
def test_prepared_digests_equal_the_reference(doc: dict[str, Any]) -> None:
    prepared = PreparedInput(doc)
    assert prepared == doc
    assert prepared.sha256 == hashlib.sha256(canonical_bytes(doc)).hexdigest()
    assert input_digest(prepared) == input_digest(dict(doc))
    assert cache_key("p", "r", prepared) == cache_key("p", "r", dict(doc))
    assert prepared.json.encode() == canonical_bytes(doc)


def test_built_input_is_prepared_and_read_only() -> None:
    doc = make_input()
    assert isinstance(doc, PreparedInput) and prepare(doc) is doc
    for mutate in (
        lambda: doc.__setitem__("version", 2),
        lambda: doc.pop("user"),
        lambda: doc.update(version=2),
        doc.clear,
        lambda: doc.__delitem__("user"),
        lambda: doc.setdefault("x", 1),
        doc.popitem,
    ):
        with pytest.raises(TypeError):
            mutate()
    assert doc["version"] == 1 and "user" in doc


def test_stable_digest_ignores_only_id_and_time() -> None:
    a, b = make_input(request_id="a"), make_input(request_id="b")
    assert a.stable_sha256 == b.stable_sha256 and a.sha256 != b.sha256
    assert make_input(path="/x").stable_sha256 != a.stable_sha256


# -- the orjson path: same bytes as json for every document without floats -----------------
# Any unicode text (control characters, quotes, backslashes, astral planes; no lone
# surrogates: hypothesis leaves them out of text, and both encoders refuse them), ints on
# both sides of 64 bits (orjson refuses the wider ones: the json way takes over).
wide_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
no_float_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**66), 2**66) | wide_text,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(wide_text | keys, inner, max_size=4)
    ),
    max_leaves=12,
)
no_float_docs = st.dictionaries(keys, no_float_values, max_size=6).flatmap(
    lambda d: st.one_of(
        st.just(d),
        st.dictionaries(keys, no_float_values, max_size=8).map(lambda r: {**d, "request": r}),
    )
)


def _fits_64(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, dict, list)):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**64
    items = value.values() if isinstance(value, dict) else value
    return all(_fits_64(v) for v in items)


@given(no_float_docs)
def test_fast_path_gives_the_canonical_bytes_or_steps_aside(doc: dict[str, Any]) -> None:
    pair = fast_serialize(doc)
    if _fits_64(doc):
        assert pair is not None  # the fast path really runs for these
    if pair is not None:
        assert pair == (canonical_bytes(doc), canonical_bytes(stable_view(doc)))
    prepared = PreparedInput(doc, no_floats=True)
    assert prepared.json_bytes == canonical_bytes(doc)
    assert prepared.json.encode() == canonical_bytes(doc)
    assert prepared.sha256 == hashlib.sha256(canonical_bytes(doc)).hexdigest()
    assert prepared.stable_sha256 == hashlib.sha256(canonical_bytes(stable_view(doc))).hexdigest()


@pytest.mark.parametrize("value", [1e-05, 1e-7, 1e16, 0.1, -0.0, [1, {"x": 1e-05}]])
def test_a_float_claim_keeps_the_json_bytes(value: Any) -> None:
    """orjson writes some floats differently (0.00001 for json's 1e-05): the input builder
    sees the float in the claims and keeps the json way, so the digest an auditor
    recomputes with json.dumps still matches."""
    d = device()
    floaty = Principal(
        kind="device",
        issuer=d.issuer,
        subject=d.subject,
        claims={**d.claims, "score": value},
        token_sha256="22" * 32,
        expires_at=d.expires_at,
        bound_to_client_cert=True,
    )
    doc = make_input(the_device=floaty)
    assert isinstance(doc, PreparedInput)
    reference = canonical_bytes(dict(doc))
    assert doc.json_bytes == reference
    assert doc.sha256 == hashlib.sha256(reference).hexdigest()
    if value == 1e-05:
        assert b"1e-05" in reference and orjson_differs(doc)


def orjson_differs(doc: dict[str, Any]) -> bool:
    """Why the float check exists: orjson alone would not give json's bytes."""
    import orjson

    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS) != canonical_bytes(dict(doc))


def test_built_input_without_floats_takes_the_fast_path() -> None:
    doc = make_input()
    assert isinstance(doc, PreparedInput)
    assert fast_serialize(doc) == (
        canonical_bytes(dict(doc)),
        canonical_bytes(stable_view(dict(doc))),
    )
    assert doc.json_bytes == canonical_bytes(dict(doc))
