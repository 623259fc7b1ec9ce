"""One audit record: the event's fields plus the chain fields, as one JSON line.

Takes a `model.AuditEvent` and the chain position; returns the exact line to write
and the record's hash. Also splits a line read back from disk into its hash and the
bytes that hash covers, without trusting the line.

    record  = event.to_dict() + {"seq": n, "prev": hex(hash of record n-1),
                                 "worker": w}                      (no floats)
    body    = RFC 8785 canonical JSON of the record            (without "hash")
    hash    = SHA-256(0x00 || body)                    = the RFC 6962 leaf hash
    line    = canonical JSON of record + {"hash": hex(hash)}, then "\n"

The chain hash and the Merkle leaf hash are one value, so verifying costs one hash
per record. The line is the body with `,"hash":"<hex>"` inserted at its sorted
place, which is exactly the canonical JSON of the record with its hash (the JSON
string escaping guarantees `,"hash":"` only occurs as that member). A verifier
hashes the bytes as found (minus that member), so any change, canonical or not, shows.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..model import AuditEvent
from .canonical import INT_LIMIT, canonical_json

CHAIN_FIELDS = ("seq", "prev", "worker")
RECORD_KEYS: frozenset[str] = frozenset(AuditEvent.__slots__) | frozenset(CHAIN_FIELDS) | {
    "hash"}
# The member that follows "hash" in sorted order: where the hash member goes.
_NEXT_KEY = min(k for k in RECORD_KEYS if k > "hash")
_INSERT_AT = b',"' + _NEXT_KEY.encode() + b'":'
HASH_MEMBER = b',"hash":"'
HEX_LEN = 64


@dataclass(frozen=True, slots=True)
class BuiltRecord:
    line: bytes  # ends with b"\n"
    leaf: bytes  # 32-byte SHA-256, also the chain hash


# The hot path encodes the record straight from the event's attributes, in sorted
# key order, with json's own C string escaper: the same bytes as the canonical
# encoder (tests/audit/test_canonical.py proves it against rfc8785) without building
# a dict or sorting. A value of any other type (a float, a bool, a huge int) sends
# the record down the general path, which makes every value safe first.
_EVENT_KEYS = tuple(sorted(AuditEvent.__slots__))
_ALL_KEYS = tuple(sorted(_EVENT_KEYS + CHAIN_FIELDS))
_GET = operator.attrgetter(*_EVENT_KEYS)
_CHAIN_AT = sorted((_ALL_KEYS.index(k), k) for k in CHAIN_FIELDS)
_PREFIXES = tuple(f'"{k}":' for k in _ALL_KEYS)
assert all(k.isidentifier() and k.isascii() for k in _ALL_KEYS)  # no key needs escaping
_escape = json.encoder.encode_basestring  # the C escaper json.dumps(ensure_ascii=False) uses


def _encode(values: Sequence[Any]) -> str | None:
    out: list[str] = []
    add = out.append
    for prefix, value in zip(_PREFIXES, values, strict=True):
        kind = type(value)
        if kind is str:
            add(prefix + _escape(value))
        elif value is None:
            add(prefix + "null")
        elif kind is int and -INT_LIMIT <= value <= INT_LIMIT:
            add(prefix + str(value))
        elif (kind is tuple or kind is list) and all(type(v) is str for v in value):
            add(prefix + "[" + ",".join(map(_escape, value)) + "]")
        else:
            return None
    return "{" + ",".join(out) + "}"


def build_record(event: AuditEvent, *, seq: int, prev: str, worker: int) -> BuiltRecord:
    values = list(_GET(event))
    chain = {"seq": seq, "prev": prev, "worker": worker}
    for index, key in _CHAIN_AT:  # ascending: each lands at its final place
        values.insert(index, chain[key])
    text = _encode(values)
    if text is not None:
        try:
            return _finish(text.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate, e.g. from a token claim
            pass
    fields = dict(zip(_ALL_KEYS, values, strict=True))
    fields["policy_reasons"] = list(event.policy_reasons)
    return build_from_fields(fields)


def build_from_fields(fields: dict[str, Any]) -> BuiltRecord:
    """The record for any field mapping (sorted and made safe here)."""
    return _finish(canonical_json(fields))


def _finish(body: bytes) -> BuiltRecord:
    leaf = hashlib.sha256(b"\x00" + body).digest()
    at = body.find(_INSERT_AT)
    if at < 0:
        raise ValueError("record lacks the member that follows the hash")
    line = b"".join((body[:at], HASH_MEMBER, leaf.hex().encode(), b'"', body[at:], b"\n"))
    return BuiltRecord(line, leaf)


def split_line(line: bytes) -> tuple[bytes, bytes] | None:
    """(stored hash hex, body bytes) of a line (without its newline), or None when the
    line has no well-placed hash member."""
    at = line.find(HASH_MEMBER)
    end = at + len(HASH_MEMBER) + HEX_LEN
    if at < 0 or line[end:end + 1] != b'"':
        return None
    return line[at + len(HASH_MEMBER):end], line[:at] + line[end + 1:]


def line_leaf(line: bytes) -> tuple[bytes, bytes] | None:
    """(stored hash hex, recomputed leaf hash) of a line, or None if malformed."""
    parts = split_line(line)
    if parts is None:
        return None
    stored, body = parts
    return stored, hashlib.sha256(b"\x00" + body).digest()
