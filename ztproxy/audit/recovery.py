"""Where a worker's chain stands on disk, read at start-up so a restart continues it.

Takes the audit directory and a worker id; returns a `ChainState`: the next seq,
the hash to chain from, the Merkle frontier, the genesis value and the number of
the last segment. Trusts the directory only as far as it is our own earlier output:
the last checkpoint line gives a frontier (checked against the checkpoint's root)
and the segments after it are re-hashed. A torn last line is reported (logged) and
left in place for the verifier; the restarted writer always opens a new segment.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import structlog

from . import merkle
from .note import NoteError, parse_signed_checkpoint
from .record import line_leaf
from .segment import ChainFiles, discover, read_lines, segment_number

log = structlog.get_logger(__name__)

_SEQ = re.compile(rb',"seq":(\d{1,16}),')


@dataclass
class ChainState:
    seq: int  # next seq to assign == number of records in the chain
    prev: str  # hex hash of record seq-1 (the genesis value when seq == 0)
    genesis: str
    tree: merkle.CompactTree
    last_segment: int  # 0 when there is none yet
    checkpointed: int  # tree size of the last checkpoint found (0 if none)


@dataclass(frozen=True, slots=True)
class _LastCheckpoint:
    size: int
    head: str
    genesis: str
    frontier: list[bytes]
    segment: str


def _last_checkpoint(path: Path | None) -> _LastCheckpoint | None:
    """The last well-formed checkpoint line. A torn fragment at the end (a crash while
    writing it) is cut off, so the next checkpoint starts on a line of its own."""
    if path is None or not path.exists():
        return None
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    if cut < len(data):
        log.warning("audit_checkpoint_fragment_removed", file=path.name,
                    bytes=len(data) - cut)
        os.truncate(path, cut)
    for raw in reversed(data[:cut].split(b"\n")):
        if not raw:
            continue
        try:
            obj = json.loads(raw)
            signed = parse_signed_checkpoint(obj["note"])
            frontier = [bytes.fromhex(h) for h in obj["frontier"]]
            cp = signed.checkpoint
            tree = merkle.CompactTree(cp.size, frontier)
        except (ValueError, KeyError, TypeError, NoteError):
            continue
        if tree.root() != cp.root:
            continue
        return _LastCheckpoint(cp.size, cp.head, cp.genesis, frontier,
                               str(obj.get("segment", "")))
    return None


def recover(directory: Path, worker: int) -> ChainState:
    chain = discover(directory).get(worker, ChainFiles(worker, (), None))
    last = _last_checkpoint(chain.checkpoints)
    last_segment = segment_number(chain.segments[-1]) if chain.segments else 0
    if last is not None:
        state = ChainState(last.size, last.head, last.genesis,
                           merkle.CompactTree(last.size, last.frontier), last_segment, last.size)
        names = [p.name for p in chain.segments]
        start = names.index(last.segment) if last.segment in names else 0
        scan = chain.segments[start:]
    else:
        genesis = secrets.token_hex(32)
        state = ChainState(0, genesis, genesis, merkle.CompactTree(), last_segment, 0)
        scan = chain.segments
        if chain.segments:
            first = read_lines(chain.segments[0]).lines
            if first and (match := re.search(rb',"prev":"([0-9a-f]{64})"', first[0])):
                state.genesis = state.prev = match.group(1).decode()
    for path in scan:
        _extend(state, path)
    return state


def _extend(state: ChainState, path: Path) -> None:
    found = read_lines(path)
    for line in found.lines:
        match = _SEQ.search(line)
        parsed = line_leaf(line)
        if match is None or parsed is None or int(match.group(1)) != state.seq:
            continue  # not the record that comes next: older, or damaged
        stored, leaf = parsed
        if stored != leaf.hex().encode():
            log.error("audit_record_hash_mismatch", segment=path.name, seq=state.seq)
        try:
            chained = bytes.fromhex(stored.decode())
        except ValueError:
            chained = leaf
        state.tree.append(chained)
        state.prev = chained.hex()
        state.seq += 1
    if found.torn:
        log.warning("audit_torn_tail", segment=path.name, after_seq=state.seq - 1,
                    bytes=len(found.torn))
