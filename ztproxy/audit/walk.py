"""Walking one chain's records in order: the fast check and the damage classifier.

Takes the record lines of a chain (all segments, in order, torn fragments removed;
for the fast walk, buffers of whole lines as verify reads them) and the chain's
genesis value (from a verified checkpoint, or None when unknown); returns the leaf
hashes of the good prefix, or the kind and place of the first damage. Trusts
nothing in the lines.

The fast walk (`walk_chunk`, and `fast_walk` over a list of lines) works on the
buffer without splitting it, one record at a time; tests/audit/test_fastpath.py
holds it to the line-by-line walk it replaced. It hashes the bytes as found and
checks `,"seq":<n>,` and
`,"prev":"<hex>"` by byte search: JSON string escaping means those byte strings can
only be members, never inside a value. The slow walk parses every record and tells
the kinds apart:

    modified   the record does not match its hash, is not canonical JSON (re-encoded
               with the canonical encoder it gives other bytes: a member moved, a
               duplicate key, 0.0, -0, whitespace), is no record, or does not chain
               to the one before (a record replaced by a self-consistent one)
    removed    a seq is missing and appears nowhere
    inserted   a second record claims a seq (the one nothing chains to is the extra),
               or a record claims a seq that nothing chains to
    reordered  a record stands where another seq belongs that appears later
"""

from __future__ import annotations

import hashlib
import json
from binascii import b2a_hex
from collections import Counter
from dataclasses import dataclass

from .canonical import is_canonical_line
from .record import HASH_MEMBER, INSERT_AT, line_leaf
from .report import Kind

_H = len(HASH_MEMBER)
_PREV = b',"prev":"'
_LEAF = hashlib.sha256(b"\x00")  # copied per record: cheaper than a new hash object


@dataclass(slots=True)
class WalkState:
    """Where a fast walk stands: the next seq, the expected `prev` (hex hash and its
    closing quote, or None when the genesis is unknown), and the good leaves so far."""

    pos: int
    prev: bytes | None
    leaves: list[bytes]
    ok: bool = True
    full_from: int = 0  # records from this seq on are re-encoded whole (see walk_chunk)


def start(genesis: str | None, pos: int = 0, full_from: int = 0) -> WalkState:
    return WalkState(
        pos, None if genesis is None else genesis.encode() + b'"', [], full_from=full_from
    )


def walk_chunk(state: WalkState, data: bytes, begin: int = 0, stop: int | None = None) -> None:
    """Check the records in data[begin:stop] (complete lines, each ending with a
    newline) and advance `state`; on the first bad line `state.ok` turns False and
    stays there.

    Line for line the same test as `fast_walk` on the split lines, on the buffer:
    slicing only what is hashed keeps the per-record cost at a dozen C calls.

    Canonical form. Every record from `state.full_from` on (verify sets it to the
    largest size a given key signed: the unsigned tail) is parsed and re-encoded
    (canonical.is_canonical_line). A record below it is covered by a signed root, so
    its hashed bytes are the writer's own (else the root does not match and verify
    says INVALID), and the writer writes only canonical JSON (tests/audit/
    test_verify_strictness.py holds it to that). The one thing the hash does not
    cover is where the hash member stands: it is checked for every record, cheaply:
    followed by the member the writer puts after it (record.INSERT_AT, the smallest
    record key above "hash": a body with sorted unique keys has it once), or else the
    record is re-encoded whole like the tail's (records of another shape, such as
    `recovery`, take that path)."""
    if not state.ok:
        return
    find, startswith, copy, keep = data.find, data.startswith, _LEAF.copy, state.leaves.append
    canonical, full_from = is_canonical_line, state.full_from
    pos, prev = state.pos, state.prev
    s, stop = begin, len(data) if stop is None else stop
    while s < stop:
        e = find(b"\n", s)
        at = find(HASH_MEMBER, s, e)
        if at < 0:
            break
        end = at + _H + 64  # the closing quote of the hash
        h = copy()
        h.update(data[s:at])
        h.update(data[end + 1 : e])
        digest = h.digest()
        quoted = b2a_hex(digest) + b'"'
        if not startswith(quoted, at + _H):  # stored hash and its quote, as found
            break
        # Members sort "hash" < "prev" < "seq": both are searched after the hash.
        p = find(_PREV, end, e)
        if p < 0 or (prev is not None and not startswith(prev, p + 9)):
            break
        if find(b',"seq":%d,' % pos, p, e) < 0:
            break
        # Not where the writer puts it (a record of another shape, e.g. `recovery`):
        # re-encoded whole, as the tail is. Reading the neighbouring keys from the raw
        # bytes was fooled by a value holding `\":` (tests/audit/test_review14_hash_member.py).
        if (pos >= full_from or not startswith(INSERT_AT, end + 1)) and not canonical(
            data[s:e]
        ):  # re-encoded: the same bytes
            break
        keep(digest)
        prev = quoted
        pos += 1
        s = e + 1
    else:
        state.pos, state.prev = pos, prev
        return
    state.pos, state.prev, state.ok = pos, prev, False


def fast_walk(lines: list[bytes], genesis: str | None) -> tuple[list[bytes], int]:
    """Leaf hashes of the longest good prefix of `lines`, and its length."""
    state = start(genesis)
    if lines:
        walk_chunk(state, b"\n".join(lines) + b"\n")
    return state.leaves, state.pos


@dataclass(frozen=True, slots=True)
class _Rec:
    ok: bool
    seq: int = -1
    prev: str = ""
    hash: str = ""
    canonical: bool = True


def _parse(line: bytes) -> _Rec:
    parts = line_leaf(line)
    try:
        obj = json.loads(line)
    except ValueError:
        return _Rec(False)
    if parts is None or not isinstance(obj, dict):
        return _Rec(False)
    seq, prev, stored = obj.get("seq"), obj.get("prev"), obj.get("hash")
    if type(seq) is not int or not isinstance(prev, str) or not isinstance(stored, str):
        return _Rec(False)
    if not is_canonical_line(line):
        return _Rec(False, seq, prev, stored, canonical=False)
    ok = parts[0].decode("ascii", "replace") == stored == parts[1].hex()
    return _Rec(ok, seq, prev, stored)


def slow_walk(
    lines: list[bytes], genesis: str | None, heads: set[str]
) -> tuple[Kind, int, str] | None:
    """The first damage in the chain: (kind, position == seq where it is, detail)."""
    recs = [_parse(line) for line in lines]
    counts = Counter(r.seq for r in recs if r.ok)
    linked = {r.prev for r in recs if r.ok} | heads
    last = max(counts, default=-1)
    prev = genesis
    for pos, r in enumerate(recs):
        if not r.ok and not r.canonical:
            return (
                Kind.MODIFIED,
                pos,
                "the record is not in canonical form (RFC 8785: "
                "members sorted, no duplicate, no whitespace, no float)",
            )
        if not r.ok:
            return Kind.MODIFIED, pos, "the record does not match its hash, or is no record"
        dup = counts[r.seq] > 1
        if r.seq == pos and (prev is None or r.prev == prev) and (not dup or r.hash in linked):
            prev = r.hash
            continue
        if dup:
            return Kind.INSERTED, pos, f"a second record claims seq {r.seq}"
        if r.seq > pos and pos in counts:
            if r.hash in linked or r.seq == last:
                return Kind.REORDERED, pos, f"seq {r.seq} stands where seq {pos} belongs"
            return Kind.INSERTED, pos, f"a record claiming seq {r.seq} that nothing chains to"
        if r.seq > pos:
            return Kind.REMOVED, pos, f"seq {pos}..{r.seq - 1} missing"
        if r.seq < pos:
            return Kind.REORDERED, pos, f"seq {r.seq} stands where seq {pos} belongs"
        return Kind.MODIFIED, pos, "the record does not chain to the one before (replaced)"
    return None
