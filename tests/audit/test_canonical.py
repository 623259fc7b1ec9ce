"""The canonical JSON fast path gives RFC 8785 bytes over the record value space."""

from __future__ import annotations

import json

import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from ztproxy.audit.canonical import canonical_json
from ztproxy.audit.record import build_record, line_leaf
from ztproxy.model import AuditEvent

from .conftest import event, events

_scalar = (
    st.text() | st.booleans() | st.none() | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
)
_record = st.dictionaries(
    st.text(alphabet=st.characters(max_codepoint=127), max_size=12),
    _scalar | st.lists(st.text(), max_size=4),
    max_size=12,
)


@given(_record)
def test_fast_path_equals_rfc8785_over_the_record_value_space(record: dict) -> None:
    assert canonical_json(record) == rfc8785.dumps(record)


@given(events(), st.integers(0, 2**40), st.binary(min_size=32, max_size=32), st.integers(0, 999))
def test_record_line_is_the_canonical_json_of_the_record_with_its_hash(
    ev: AuditEvent, seq: int, prev: bytes, worker: int
) -> None:
    built = build_record(ev, seq=seq, prev=prev.hex(), worker=worker)
    assert built.line.endswith(b"\n") and built.line.count(b"\n") == 1
    record = json.loads(built.line)
    assert record["hash"] == built.leaf.hex()
    assert built.line[:-1] == rfc8785.dumps(record)
    without_hash = {k: v for k, v in record.items() if k != "hash"}
    stored, leaf = line_leaf(built.line[:-1]) or (b"", b"")
    assert stored.decode() == leaf.hex() == built.leaf.hex()
    assert leaf == __import__("hashlib").sha256(b"\x00" + rfc8785.dumps(without_hash)).digest()


def test_values_outside_the_space_are_made_safe_not_misencoded() -> None:
    # A float would make the fast path differ from JCS; a lone surrogate (possible in
    # a JSON-decoded token claim) cannot be UTF-8 encoded at all.
    record = {"a": 1.5, "b": 2.0, "c": 2**60, "d": "x\ud800y", "e": ["\udfff"]}
    out = canonical_json(record)
    assert json.loads(out) == {"a": "1.5", "b": 2, "c": str(2**60), "d": "x?y", "e": ["?"]}
    assert out == rfc8785.dumps(json.loads(out))


def test_event_with_lone_surrogate_still_becomes_a_record() -> None:
    built = build_record(event(1, user_subject="\ud800bob"), seq=0, prev="0" * 64, worker=0)
    assert json.loads(built.line)["user_subject"] == "?bob"
