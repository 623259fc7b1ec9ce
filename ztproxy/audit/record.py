"""One audit record: the event's fields plus the chain fields, as one JSON line.

Takes `model.AuditEvent`s and the chain position; returns the exact lines to write
and the records' hashes. Also splits a line read back from disk into its hash and
the bytes that hash covers, without trusting the line.

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

Speed (the writer thread's main cost): the record's keys and their order are fixed,
so a record is one f-string of a small function generated for the record's *shape*
(which fields are None, how many policy reasons), built once and cached.
Strings that JSON would not escape (no control character, quote or backslash: one
`bytes.translate` over all of them tells) go in as they are; otherwise they are
escaped with json's own C escaper. Anything outside that value space (a float, a
bool, an integer beyond 2**53 - 1, a lone surrogate, a subclass) takes the general
path, `canonical.canonical_json`, which is also the reference the tests hold the
fast path to (tests/audit/test_canonical.py, with hypothesis, against `rfc8785`).
"""

from __future__ import annotations

import hashlib
import json.encoder
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..model import AuditEvent
from .canonical import INT_LIMIT, canonical_json

CHAIN_FIELDS = ("seq", "prev", "worker")
RECORD_KEYS: frozenset[str] = frozenset(AuditEvent._fields) | frozenset(CHAIN_FIELDS) | {"hash"}
# The member that follows "hash" in sorted order: where the hash member goes.
_NEXT_KEY = min(k for k in RECORD_KEYS if k > "hash")
_INSERT_AT = b',"' + _NEXT_KEY.encode() + b'":'
HASH_MEMBER = b',"hash":"'
INSERT_AT = _INSERT_AT  # the member that follows the hash in the writer's records
HEX_LEN = 64


@dataclass(frozen=True, slots=True)
class BuiltRecord:
    line: bytes  # ends with b"\n"
    leaf: bytes  # 32-byte SHA-256, also the chain hash


# The fast path. A record's *shape* is the types of the event's scalar fields (in
# sorted order) and of its policy reasons. Per shape, one small function is
# generated (as dataclasses and namedtuple do) that formats the whole record with
# one f-string: each value is read straight from the event's slots and lands at its
# place in sorted key order, None fields are literal `null`. Only key names from
# AuditEvent._fields (identifiers, asserted) and indices go into the source.
_SCALARS = tuple(sorted(k for k in AuditEvent._fields if k != "policy_reasons"))
_KEYS = tuple(sorted(_SCALARS + CHAIN_FIELDS + ("policy_reasons",)))
assert all(k.isidentifier() and k.isascii() for k in _KEYS)  # no key needs escaping
_GET = operator.attrgetter(*_SCALARS)
_NONE = type(None)
_UNSAFE = bytes(range(0x20)) + b'"\\'  # what JSON string escaping changes (as UTF-8)
_escape = json.encoder.encode_basestring  # the C escaper json.dumps(ensure_ascii=False) uses
_sha256 = hashlib.sha256
_MAX_LAYOUTS = 4096

_Encoder = Callable[[AuditEvent, int, str, int], "bytes | None"]


def _compile(shape: tuple[type, ...]) -> _Encoder | None:
    """The encoder for records of this shape, or None when the fast path does not
    cover it (a float, a bool, a subclass...): the general path takes those."""
    kinds = dict(zip(_SCALARS, shape[: len(_SCALARS)], strict=True))
    reasons = shape[len(_SCALARS) :]
    if any(t is not str and t is not int and t is not _NONE for t in kinds.values()) or any(
        t is not str for t in reasons
    ):
        return None
    strings, ints, plain, escaped = ["prev"], ["seq", "worker"], [], []
    for key in _KEYS:
        if key == "policy_reasons":
            items = [f"r[{i}]" for i in range(len(reasons))]
            strings += items
            plain.append('\\"policy_reasons\\":[' + ",".join(f'\\"{{{x}}}\\"' for x in items) + "]")
            escaped.append('\\"policy_reasons\\":[' + ",".join(f"{{q({x})}}" for x in items) + "]")
            continue
        ref = key if key in CHAIN_FIELDS else f"e.{key}"
        kind = str if key == "prev" else int if key in ("seq", "worker") else kinds[key]
        if kind is _NONE:
            plain.append(f'\\"{key}\\":null')
            escaped.append(f'\\"{key}\\":null')
        elif kind is int:
            if key not in CHAIN_FIELDS:
                ints.append(ref)
            plain.append(f'\\"{key}\\":{{{ref}}}')
            escaped.append(f'\\"{key}\\":{{{ref}}}')
        else:
            if key != "prev":
                strings.append(ref)
            plain.append(f'\\"{key}\\":\\"{{{ref}}}\\"')
            escaped.append(f'\\"{key}\\":{{q({ref})}}')
    source = "\n".join(
        (
            "def encode(e, seq, prev, worker):",
            "    r = e.policy_reasons",
            f"    if not ({' and '.join(f'-L <= {x} <= L' for x in ints)}):",
            "        return None",
            "    try:",
            f"        raw = ''.join(({', '.join(strings)},)).encode()",
            "    except UnicodeEncodeError:  # a lone surrogate, e.g. from a token claim",
            "        return None",
            "    if len(raw.translate(None, U)) == len(raw):",
            f'        return f"{{{{{",".join(plain)}}}}}".encode()',
            f'    return f"{{{{{",".join(escaped)}}}}}".encode()',
        )
    )
    namespace: dict[str, Any] = {"L": INT_LIMIT, "U": _UNSAFE, "q": _escape}
    exec(source, namespace)  # noqa: S102 - source built from key names only (see above)
    encoder: _Encoder = namespace["encode"]
    return encoder


_ENCODERS: dict[tuple[type, ...], _Encoder | None] = {}


def _fast_body(event: AuditEvent, seq: int, prev: str, worker: int) -> bytes | None:
    shape = (*map(type, _GET(event)), *map(type, event.policy_reasons))
    try:
        encoder = _ENCODERS[shape]
    except KeyError:
        encoder = _compile(shape)
        if len(_ENCODERS) < _MAX_LAYOUTS:
            _ENCODERS[shape] = encoder
    if encoder is None or type(seq) is not int or type(worker) is not int or type(prev) is not str:
        return None
    return encoder(event, seq, prev, worker)


def record_fields(event: AuditEvent, *, seq: int, prev: str, worker: int) -> dict[str, Any]:
    """The record as a mapping (without its hash): what the general path encodes."""
    fields = event.to_dict()
    fields.update(seq=seq, prev=prev, worker=worker)
    return fields


def build_lines(
    events: Iterable[AuditEvent], *, seq: int, prev: str, worker: int
) -> tuple[list[bytes], list[bytes], str]:
    """The lines and leaf hashes of `events` as records seq, seq+1, ... chained from
    `prev`; and the hex hash of the last one (== `prev` when there are none)."""
    lines: list[bytes] = []
    leaves: list[bytes] = []
    add_line, add_leaf = lines.append, leaves.append
    sha, insert_at, member, fast = _sha256, _INSERT_AT, HASH_MEMBER, _fast_body
    for event in events:
        body = fast(event, seq, prev, worker)
        if body is None:
            body = canonical_json(record_fields(event, seq=seq, prev=prev, worker=worker))
        leaf = sha(b"\x00" + body).digest()
        at = body.find(insert_at)
        if at < 0:
            raise ValueError("record lacks the member that follows the hash")
        prev = leaf.hex()
        add_line(b"".join((body[:at], member, prev.encode(), b'"', body[at:], b"\n")))
        add_leaf(leaf)
        seq += 1
    return lines, leaves, prev


def build_record(event: AuditEvent, *, seq: int, prev: str, worker: int) -> BuiltRecord:
    lines, leaves, _ = build_lines((event,), seq=seq, prev=prev, worker=worker)
    return BuiltRecord(lines[0], leaves[0])


def build_from_fields(fields: dict[str, Any]) -> BuiltRecord:
    """The record for any field mapping (sorted and made safe here): the general path."""
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
    if at < 0 or line[end : end + 1] != b'"':
        return None
    return line[at + len(HASH_MEMBER) : end], line[:at] + line[end + 1 :]


def line_leaf(line: bytes) -> tuple[bytes, bytes] | None:
    """(stored hash hex, recomputed leaf hash) of a line, or None if malformed."""
    parts = split_line(line)
    if parts is None:
        return None
    stored, body = parts
    return stored, hashlib.sha256(b"\x00" + body).digest()
