"""One serialization of the policy input: the same bytes, both digests, read-only."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from policy_support import make_input

from ztproxy.policy.cache import cache_key
from ztproxy.policy.canonical import canonical_bytes, stable_view
from ztproxy.policy.prepared import PreparedInput, prepare, serialize
from ztproxy.stages.policy_input import input_digest

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=10)
# keys around the split points ("id", "time", "request") and on either side of them
keys = st.sampled_from(["", "a", "headers", "host", "i", "id", "ida", "method", "r",
                        "request", "requesu", "s", "scheme", "t", "time", "timf", "z",
                        "é", "\U0001f600"]) | st.text(max_size=5)
requests = st.dictionaries(keys, json_values, max_size=8)
docs = st.dictionaries(keys, json_values, max_size=6).flatmap(
    lambda d: st.one_of(st.just(d), requests.map(lambda r: {**d, "request": r})))


@given(docs)
def test_serialization_is_the_canonical_bytes_of_doc_and_stable_view(doc: dict[str, Any]
                                                                       ) -> None:
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
    for mutate in (lambda: doc.__setitem__("version", 2), lambda: doc.pop("user"),
                   lambda: doc.update(version=2), doc.clear, lambda: doc.__delitem__("user"),
                   lambda: doc.setdefault("x", 1), doc.popitem):
        with pytest.raises(TypeError):
            mutate()
    assert doc["version"] == 1 and "user" in doc


def test_stable_digest_ignores_only_id_and_time() -> None:
    a, b = make_input(request_id="a"), make_input(request_id="b")
    assert a.stable_sha256 == b.stable_sha256 and a.sha256 != b.sha256
    assert make_input(path="/x").stable_sha256 != a.stable_sha256
