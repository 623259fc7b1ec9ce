"""Offline verification of an audit directory: every chain, every segment.

Takes the directory, the auditor's public keys and optionally a checkpoint the
auditor kept from earlier; returns a `Report` (report.py). Trusts only the keys:
everything read from the directory is checked, and a checkpoint counts only when
a given key signed it.

Per worker chain: (1) walk.walk_chunk re-hashes every record and checks seq and prev,
reading the segments in chunks and taking the Merkle roots at the checkpoints' sizes
on the way (one pass, memory bounded by a chunk, not by the log);
(2) only if that fails, walk.slow_walk names the first damage;
(3) every checkpoint's signature is checked and its root and head recomputed from
the records; a checkpoint larger than the log means it was truncated; (4) a trusted
checkpoint must be a prefix of today's log (same root at its size), else the log was
rolled back (truncated) or rewritten (forked).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from . import fanout, merkle
from .keys import PublicKey
from .note import (
    Checkpoint,
    NoteError,
    SignatureCheck,
    SignedCheckpoint,
    parse_signed_checkpoint,
    verify_note,
)
from .report import ChainReport, Finding, Kind, Report, SegmentReport
from .segment import ChainFiles, LineChunks, discover, read_lines
from .walk import slow_walk, start, walk_chunk


@dataclass
class _Chain:
    files: ChainFiles
    counts: list[int]  # complete records (lines) per segment
    starts: list[int]  # position of each segment's first record
    torn: list[bytes]  # per segment
    good: int  # length of the prefix the fast walk accepted
    roots: dict[int, tuple[bytes, bytes | None]]  # size -> (root, leaf size-1)

    @property
    def n(self) -> int:
        return sum(self.counts)

    def segment_at(self, pos: int) -> str | None:
        if not self.files.segments:
            return None
        index = max(0, bisect.bisect_right(self.starts, pos) - 1)
        return self.files.segments[index].name

    def lines(self) -> list[bytes]:
        """Every record line, read again: only the damage classifier needs them."""
        out: list[bytes] = []
        for path in self.files.segments:
            out.extend(read_lines(path).lines)
        return out


def _read(
    files: ChainFiles,
    genesis: str | None,
    sizes: Iterable[int],
    workers: int | None,
    full_from: int = 0,
) -> _Chain:
    """One pass over the chain's segments, chunk by chunk: count the records, walk
    them (walk.walk_chunk) until the first bad one, and take the roots on the way.
    A large chain is walked by several processes first (fanout.py); when that cannot
    vouch for the whole chain, this sequential walk decides."""
    sizes = list(sizes)
    total = sum(path.stat().st_size for path in files.segments)
    processes = fanout.usable_workers(workers, total)
    if processes > 1:
        roots = merkle.RootsAt(sizes)
        roots.add([])  # size 0
        pieces = fanout.walk_parallel(
            files.segments, genesis, processes, roots.add, full_from=full_from
        )
        if pieces is not None:
            return _from_pieces(files, pieces, roots)
    counts: list[int] = []
    starts: list[int] = []
    torn: list[bytes] = []
    state = start(genesis, full_from=full_from)
    roots = merkle.RootsAt(sizes)
    roots.add([])  # size 0
    n = 0
    for path in files.segments:
        starts.append(n)
        chunks = LineChunks(path)
        for data, begin, stop in chunks:
            if state.ok:
                before = state.pos
                walk_chunk(state, data, begin, stop)
                roots.add(state.leaves)
                state.leaves.clear()
                if state.ok:  # every line of the chunk was a good record
                    n += state.pos - before
                    continue
            n += data.count(b"\n", begin, stop)
        counts.append(n - starts[-1])
        torn.append(chunks.torn)
    return _Chain(files, counts, starts, torn, state.pos, roots.found)


def _from_pieces(
    files: ChainFiles, pieces: list[tuple[fanout.Piece, fanout.PieceResult]], roots: merkle.RootsAt
) -> _Chain:
    counts = [0] * len(files.segments)
    torn = [b""] * len(files.segments)
    for piece, result in pieces:
        counts[piece.segment] += result.lines
        torn[piece.segment] = result.torn  # the segment's last piece comes last
    starts = [sum(counts[:i]) for i in range(len(counts))]
    return _Chain(files, counts, starts, torn, sum(counts), roots.found)


_Bad = tuple[Kind, int | None, str, bool]


def _checkpoints(
    files: ChainFiles, keys: tuple[PublicKey, ...]
) -> tuple[list[tuple[Checkpoint, str]], list[_Bad]]:
    """Checkpoints signed by a given key (with the key name), and (kind, seq, detail,
    placed) of the rest: placed ones get a segment once the records are counted."""
    good: list[tuple[Checkpoint, str]] = []
    bad: list[_Bad] = []
    path = files.checkpoints
    if path is None:
        return good, bad
    found = read_lines(path)
    last: Checkpoint | None = None
    seen: set[str] = set()  # texts of the checkpoints taken so far
    for number, raw in enumerate(found.lines, 1):
        try:
            signed = parse_signed_checkpoint(json.loads(raw)["note"])
        except (ValueError, KeyError, TypeError, NoteError):
            bad.append(
                (
                    Kind.BAD_SIGNATURE,
                    None,
                    f"checkpoint line {number} is not a signed checkpoint",
                    False,
                )
            )
            continue
        status, key = verify_note(signed.note, keys)
        cp = signed.checkpoint
        if status is SignatureCheck.VALID and key is not None:
            stale = _stale(last, cp) or (
                f"size {cp.size} repeated word for word (a copied line)"
                if cp.text() in seen
                else ""
            )  # not only the line right before it
            if stale:
                bad.append(
                    (Kind.STALE_CHECKPOINT, None, f"checkpoint line {number}: {stale}", False)
                )
                continue
            good.append((cp, key.name))
            seen.add(cp.text())
            last = cp
            continue
        names = ", ".join(s.name for s in signed.note.signatures)
        detail = (
            f"checkpoint of size {cp.size} is signed by {names}, not a given key"
            if status is SignatureCheck.UNKNOWN_KEY
            else f"checkpoint of size {cp.size} does not verify with key {names}"
        )
        bad.append((Kind(status.value), cp.size - 1 if cp.size else None, detail, True))
    if found.torn:
        bad.append(
            (
                Kind.TORN_TAIL,
                None,
                f"checkpoints file ends in a {len(found.torn)}-byte fragment",
                False,
            )
        )
    return good, bad


def _stale(last: Checkpoint | None, cp: Checkpoint) -> str:
    """Why `cp` cannot follow `last` in the checkpoints file ("" when it can). Sizes
    grow in file order; an equal size is a heartbeat: the same tree, signed at another
    time (the writer never signs the same text twice)."""
    if last is None:
        return ""
    if cp.size < last.size:
        return (
            f"size {cp.size} after a checkpoint of size {last.size}: an old checkpoint "
            "appended again (stale)"
        )
    if cp.size == last.size and (cp.root != last.root or cp.head != last.head):
        return f"size {cp.size} signed twice with different roots"
    if cp.size == last.size and cp.text() == last.text():
        return f"size {cp.size} repeated word for word (a copied line)"
    return ""


def verify_chain(
    files: ChainFiles,
    keys: tuple[PublicKey, ...],
    trusted: Checkpoint | None = None,
    *,
    workers: int | None = None,
) -> ChainReport:
    cps, bad = _checkpoints(files, keys)
    origins = {cp.origin for cp, _ in cps}
    geneses = {cp.genesis for cp, _ in cps}
    origin = min(origins) if origins else ""
    genesis = min(geneses) if len(geneses) == 1 else None
    sizes = [cp.size for cp, _ in cps] + ([trusted.size] if trusted is not None else [])
    # Records a signed root covers are the writer's bytes: their canonical form is
    # proven by the root (walk.walk_chunk); the rest is re-encoded whole.
    chain = _read(
        files, genesis, sizes, workers, full_from=max((cp.size for cp, _ in cps), default=0)
    )
    n, good = chain.n, chain.good
    findings: list[Finding] = []
    for kind, seq, detail, placed in bad:
        segment = chain.segment_at(min(seq or 0, max(n - 1, 0))) if placed else None
        findings.append(Finding(kind, seq, segment, detail))
    if len(origins) > 1 or len(geneses) > 1 or any(cp.worker != files.worker for cp, _ in cps):
        findings.append(
            Finding(Kind.FORKED, None, None, "checkpoints signed for different logs or chains")
        )
    walk_damage: int | None = None
    if good < n:
        damage = slow_walk(chain.lines(), genesis, {cp.head for cp, _ in cps})
        kind, pos, detail = damage or (Kind.MODIFIED, good, "the record is not canonical")
        findings.append(Finding(kind, pos, chain.segment_at(pos), detail))
        walk_damage = good = min(pos, good)
    roots = {size: root for size, (root, _) in chain.roots.items() if size <= good}
    signed, last_ok = 0, 0
    for cp, _ in sorted(cps, key=lambda item: item[0].size):
        if cp.size > n:
            if walk_damage is None:
                findings.append(
                    Finding(
                        Kind.TRUNCATED,
                        n,
                        chain.segment_at(n),
                        f"a checkpoint covers {cp.size} records, the log has {n}",
                    )
                )
            continue
        if cp.size > good:
            continue  # beyond the damage the walk already reported
        last_leaf = chain.roots[cp.size][1]
        head = last_leaf.hex() if cp.size and last_leaf is not None else cp.genesis
        if roots[cp.size] != cp.root or head != cp.head:
            findings.append(
                Finding(
                    Kind.MODIFIED,
                    last_ok,
                    chain.segment_at(last_ok),
                    f"records {last_ok}..{cp.size - 1} do not match the "
                    f"checkpoint signed at size {cp.size}",
                )
            )
        else:
            signed = last_ok = cp.size
    if trusted is not None:
        findings.extend(_against_trusted(chain, trusted, origin, genesis, good, walk_damage, roots))
    if not cps:
        findings.append(
            Finding(
                Kind.NO_CHECKPOINT,
                0 if n else None,
                chain.segment_at(0),
                f"no checkpoint signed by a given key: none of the {n} record(s) is proven",
            )
        )
    elif signed < n:
        findings.append(
            Finding(
                Kind.UNSIGNED_TAIL,
                signed,
                chain.segment_at(signed),
                f"records {signed}..{n - 1} are not covered by a signed checkpoint",
            )
        )
    segments = _segments(chain, findings, signed, walk_damage, bool(cps))
    keys_used = tuple(sorted({name for _, name in cps}))
    return ChainReport(
        files.worker, origin, n, signed, len(cps), keys_used, segments, tuple(findings)
    )


def _against_trusted(
    chain: _Chain,
    trusted: Checkpoint,
    origin: str,
    genesis: str | None,
    good: int,
    walk_damage: int | None,
    roots: dict[int, bytes],
) -> list[Finding]:
    n = chain.n
    where = f"the trusted checkpoint (size {trusted.size}, {trusted.time})"
    if (origin and trusted.origin != origin) or (genesis and trusted.genesis != genesis):
        return [Finding(Kind.FORKED, None, None, f"{where} belongs to another log")]
    if trusted.size > n:
        return [
            Finding(
                Kind.TRUNCATED,
                n,
                chain.segment_at(n),
                f"the log holds {n} records but {where} covers more: rolled back or truncated",
            )
        ]
    if trusted.size <= good and roots[trusted.size] != trusted.root:
        return [
            Finding(
                Kind.FORKED,
                None,
                None,
                f"records 0..{trusted.size - 1} differ from {where}: rewritten",
            )
        ]
    del walk_damage
    return []


def _segments(
    chain: _Chain,
    findings: list[Finding],
    signed: int,
    walk_damage: int | None,
    chain_signed: bool = True,
) -> tuple[SegmentReport, ...]:
    out: list[SegmentReport] = []
    n = chain.n
    for index, path in enumerate(chain.files.segments):
        start = chain.starts[index]
        end = chain.starts[index + 1] if index + 1 < len(chain.starts) else n
        span = (start, end - 1) if end > start else (None, None)
        torn = None
        if chain.torn[index]:
            torn = Finding(
                Kind.TORN_TAIL,
                end,
                path.name,
                f"{len(chain.torn[index])} bytes after the last record: a write "
                "cut short (crash or disk error), not a record",
            )
        mine = [f for f in findings if f.segment == path.name and f.kind.is_tampering]
        if mine:
            first = min(mine, key=lambda f: -1 if f.seq is None else f.seq)
            status, finding = "invalid", first
        elif walk_damage is not None and start > walk_damage:
            status, finding = "unverified", None
        elif end > signed and not chain_signed:
            status = "unsigned"
            finding = Finding(
                Kind.NO_CHECKPOINT,
                start,
                path.name,
                f"records {start}..{end - 1}: no checkpoint signed by a given key",
            )
        elif end > signed:
            status = "unsigned"
            finding = Finding(
                Kind.UNSIGNED_TAIL,
                max(start, signed),
                path.name,
                f"records {max(start, signed)}..{end - 1} are not covered by a signed checkpoint",
            )
        else:
            status, finding = "valid", None
        out.append(SegmentReport(path.name, span[0], span[1], end - start, status, finding, torn))
    return tuple(out)


def verify_directory(
    path: str | Path,
    public_keys: Iterable[PublicKey],
    *,
    trusted_checkpoint: SignedCheckpoint | None = None,
    workers: int | None = None,
) -> Report:
    """Verify every chain in `path`. `trusted_checkpoint` (parsed with
    note.parse_signed_checkpoint) must be signed by one of `public_keys`.
    `workers`: processes per large chain (None: one per core; 1: no fan-out)."""
    directory = Path(path)
    keys = tuple(public_keys)
    if not directory.is_dir():
        return Report(str(directory), (), (f"not a directory: {directory}",))
    chains = discover(directory)
    problems: list[str] = []
    trusted: Checkpoint | None = None
    if trusted_checkpoint is not None:
        status, _ = verify_note(trusted_checkpoint.note, keys)
        trusted = trusted_checkpoint.checkpoint
        if status is not SignatureCheck.VALID:
            problems.append(f"trusted checkpoint: {status.value}")
            trusted = None
        elif trusted.worker not in chains:
            problems.append(
                f"trusted checkpoint of {trusted.origin}: its chain is missing "
                "from the directory (removed or rolled back)"
            )
    if not chains:
        problems.append("no audit chains found")
    reports = tuple(
        verify_chain(
            files, keys, trusted if trusted and trusted.worker == w else None, workers=workers
        )
        for w, files in chains.items()
    )
    return Report(str(directory), reports, tuple(problems))
