"""Walking one chain's records in order: the fast check and the damage classifier.

Takes the record lines of a chain (all segments, in order, torn fragments removed)
and the chain's genesis value (from a verified checkpoint, or None when unknown);
returns the leaf hashes of the good prefix, or the kind and place of the first damage.
Trusts nothing in the lines.

The fast walk hashes the bytes as found and checks `,"seq":<n>,` and
`,"prev":"<hex>"` by byte search: JSON string escaping means those byte strings can
only be members, never inside a value. The slow walk parses every record and tells
the kinds apart:

    modified   the record does not match its hash, is no record, or does not chain
               to the one before (a record replaced by a self-consistent one)
    removed    a seq is missing and appears nowhere
    inserted   a second record claims a seq (the one nothing chains to is the extra),
               or a record claims a seq that nothing chains to
    reordered  a record stands where another seq belongs that appears later
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass

from .record import HASH_MEMBER, line_leaf
from .report import Kind

_H = len(HASH_MEMBER)


def fast_walk(lines: list[bytes], genesis: str | None) -> tuple[list[bytes], int]:
    """Leaf hashes of the longest good prefix, and its length."""
    leaves: list[bytes] = []
    keep = leaves.append
    prev = genesis.encode() if genesis is not None else None
    sha = hashlib.sha256
    for pos, line in enumerate(lines):
        at = line.find(HASH_MEMBER)
        end = at + _H + 64
        if at < 0 or line[end:end + 1] != b'"':
            return leaves, pos
        h = sha(b"\x00")
        h.update(line[:at])
        h.update(line[end + 1:])
        digest = h.digest()
        stored = line[at + _H:end]
        if digest.hex().encode() != stored:
            return leaves, pos
        # Members sort "hash" < "prev" < "seq": both are searched after the hash.
        p = line.find(b',"prev":"', end)
        if p < 0 or (prev is not None and line[p + 9:p + 74] != prev + b'"'):
            return leaves, pos
        if line.find(b',"seq":%d,' % pos, p) < 0:
            return leaves, pos
        keep(digest)
        prev = stored
    return leaves, len(lines)


@dataclass(frozen=True, slots=True)
class _Rec:
    ok: bool
    seq: int = -1
    prev: str = ""
    hash: str = ""


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
    ok = parts[0].decode("ascii", "replace") == stored == parts[1].hex()
    return _Rec(ok, seq, prev, stored)


def slow_walk(lines: list[bytes], genesis: str | None,
              heads: set[str]) -> tuple[Kind, int, str] | None:
    """The first damage in the chain: (kind, position == seq where it is, detail)."""
    recs = [_parse(line) for line in lines]
    counts = Counter(r.seq for r in recs if r.ok)
    linked = {r.prev for r in recs if r.ok} | heads
    last = max(counts, default=-1)
    prev = genesis
    for pos, r in enumerate(recs):
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
