"""Verification across cores: one chain's fast walk, split into byte ranges.

Stage: the auditor's tools (offline). Takes a chain's segment files, its genesis
(or None) and the tree sizes whose roots verify needs; returns the same `Walked`
facts the sequential reader gives (records per segment, torn tails, the good
prefix, the roots), or None when it cannot vouch for the result, and then verify
runs the sequential walk, which also names the damage.

Trusts nothing in the files. Each range is walked (walk.walk_chunk) from the seq its
first record claims, with that record's `prev` unchecked; the parent then checks
that every range starts at the position it really holds and that its first
record's `prev` is the hash the previous range ended with. Those are exactly the
checks the sequential walk makes at that line, so whenever this accepts a chain the
sequential walk accepts it too, with the same leaves. Any doubt (a bad record, a
range that does not line up) means None, never a finding.

Processes are forked (no re-import, a few milliseconds each), and only when the
calling process runs a single thread (forking a threaded process can copy a lock
that some other thread holds) and the chain is large enough to pay for it.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from .record import HASH_MEMBER
from .segment import LineChunks
from .walk import start, walk_chunk

RANGE_BYTES = 16 << 20  # work per process task
MIN_PARALLEL_BYTES = 32 << 20  # below this, one process is faster than two
_SEQ = re.compile(rb',"seq":(\d{1,16}),')
_PREV = b',"prev":"'


@dataclass(frozen=True, slots=True)
class Piece:
    segment: int  # index in the chain's segment list
    path: Path
    begin: int
    end: int  # the segment's size for its last piece (which then reports the torn tail)


@dataclass(frozen=True, slots=True)
class PieceResult:
    lines: int  # complete lines in the piece
    ok: bool  # every line a good record, relative to first_seq
    first_seq: int
    first_prev: bytes  # the first record's prev value and closing quote, as found
    last: bytes  # the last record's hash (hex) and closing quote
    leaves: bytes  # 32 bytes per record
    torn: bytes


def plan(segments: Sequence[Path], range_bytes: int | None = None) -> list[Piece]:
    """Cut every segment at line boundaries into pieces of about `range_bytes`."""
    range_bytes = range_bytes or RANGE_BYTES
    pieces: list[Piece] = []
    for index, path in enumerate(segments):
        size = path.stat().st_size
        begin = 0
        with path.open("rb") as fh:
            while size - begin > range_bytes:
                fh.seek(begin + range_bytes)
                cut = -1
                while cut < 0 and (block := fh.read(1 << 16)):
                    newline = block.find(b"\n")
                    cut = fh.tell() - len(block) + newline + 1 if newline >= 0 else -1
                if cut < 0:
                    break  # no newline after this point: the rest is one piece
                pieces.append(Piece(index, path, begin, cut))
                begin = cut
        pieces.append(Piece(index, path, begin, size))
    return pieces


def walk_piece(piece: Piece, full_from: int = 0) -> PieceResult:
    """Walk one piece (in a worker process)."""
    chunks = LineChunks(piece.path, begin=piece.begin, end=piece.end)
    state = None
    lines = 0
    first_seq, first_prev = -1, b""
    out: list[bytes] = []
    for data, begin, stop in chunks:
        if state is None:
            first = data[begin : data.index(b"\n", begin)]
            at = first.find(HASH_MEMBER)
            p = first.find(_PREV, at + len(HASH_MEMBER) + 64) if at >= 0 else -1
            match = _SEQ.search(first, p) if p >= 0 else None
            first_prev = first[p + 9 : p + 74] if p >= 0 else b""
            first_seq = int(match.group(1)) if match else -1
            state = start(None, max(first_seq, 0), full_from=full_from)
            state.ok = match is not None
        if state.ok:
            before = state.pos
            walk_chunk(state, data, begin, stop)
            out.append(b"".join(state.leaves))
            state.leaves.clear()
            if state.ok:
                lines += state.pos - before
                continue
        lines += data.count(b"\n", begin, stop)
    ok = state is None or state.ok
    last = state.prev if state is not None and state.prev is not None else b""
    return PieceResult(lines, ok, first_seq, first_prev, last, b"".join(out), chunks.torn)


def usable_workers(requested: int | None, total_bytes: int) -> int:
    """How many processes to walk with (1: do not fan out)."""
    if requested is not None and requested <= 1:
        return 1
    if total_bytes < MIN_PARALLEL_BYTES or threading.active_count() > 1:
        return 1
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
    return max(1, min(requested or cores, cores, 16))


def walk_parallel(
    segments: Sequence[Path],
    genesis: str | None,
    workers: int,
    on_leaves: Callable[[list[bytes]], None],
    range_bytes: int | None = None,
    *,
    full_from: int = 0,
) -> list[tuple[Piece, PieceResult]] | None:
    """Walk all pieces in `workers` processes, handing each piece's leaves to
    `on_leaves` in order as it arrives (so the caller's Merkle tree grows while
    later pieces are still being walked); the pieces and their results, or None when
    any piece is damaged or does not continue the one before."""
    pieces = plan(segments, range_bytes)
    context = multiprocessing.get_context("fork")
    expected_seq = 0
    prev = None if genesis is None else genesis.encode() + b'"'
    done: list[tuple[Piece, PieceResult]] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        walked = pool.map(partial(walk_piece, full_from=full_from), pieces)
        for piece, result in zip(pieces, walked, strict=True):
            if not result.ok:
                return None
            if result.lines:
                if result.first_seq != expected_seq or (
                    prev is not None and result.first_prev != prev
                ):
                    return None
                prev = result.last
                blob = result.leaves
                on_leaves([blob[i : i + 32] for i in range(0, len(blob), 32)])
            expected_seq += result.lines
            done.append((piece, result))
    return done
