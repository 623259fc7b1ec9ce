"""Where a worker's chain stands on disk, read at start-up so a restart continues it,
and verified before anything is signed over it.

Takes the audit directory, a worker id, the configured key's public half and the
chain's origin; returns a `ChainState`: the next seq, the hash to chain from, the
Merkle frontier, the genesis value, the number of the last segment, and what was set
aside. Trusts nothing in the directory but signatures by the configured key:

1. The checkpoints file: the last line whose note verifies under the configured key
   (origin, layout, Merkle frontier matching the signed root, size not below an
   earlier verified one) is where the chain resumes. What follows it is set aside: a
   torn fragment (a crash while writing a line) always; a complete line that does
   not verify (a forged or foreign checkpoint, one signed by another key) only with
   `accept_recovery` (else `RecoveryRefused`, one line). A chain with records but no
   verified checkpoint at all is refused the same way.
2. The records after that checkpoint (the unsigned tail: from the record after its
   head, in its segment, then every later segment) are adopted only while each one
   is canonical JSON, its hash matches its bytes, its `prev` is the hash before it,
   its `seq` is the next one and its `worker` is this worker; and only up to the
   record the writer's seal (`w<N>.seal`, signed by the configured key after every
   write, see chain.py) names. A record that chains perfectly but that the writer
   never sealed (appended by someone without the key, after a clean stop or a
   crash) is not adopted.
3. Everything not adopted is moved into `<dir>/quarantine/` (never deleted): a
   partial segment's bytes copied there and the segment truncated, whole later
   segments renamed there. Each move is one `SetAside` (file, byte range, SHA-256,
   where it went, why), which the writer states in a signed record of kind
   `recovery` (chain.py).
   Each move is also journalled in `quarantine/w<N>.pending` until the recovery
   record is written (chain.py calls `clear_pending`): a start that dies in between
   leaves the journal, and the next start states those moves too (each only if the
   quarantined file still holds bytes of the journalled SHA-256, and marked as
   coming from the unsigned journal).
4. The segments holding adopted records are fsynced before the writer continues, so
   the first checkpoint after the restart covers durable records only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import structlog

from . import merkle
from .canonical import is_canonical_line
from .keys import PublicKey
from .note import NoteError, SignatureCheck, parse_signed_checkpoint, verify_note
from .record import line_leaf
from .segment import (
    ChainFiles,
    checkpoints_name,
    discover,
    fsync_dir,
    seal_name,
    segment_number,
)

log = structlog.get_logger(__name__)

QUARANTINE_DIR = "quarantine"
SEAL_CONTEXT = "ztproxy-audit-seal"
_SEQ = re.compile(rb',"seq":(\d{1,16}),')


class RecoveryRefused(Exception):
    """The chain on disk cannot be continued without an operator's decision; the
    message is one line and says what to do."""


@dataclass(frozen=True, slots=True)
class SetAside:
    source: str  # file name in the audit directory
    begin: int  # byte range [begin, end) of that file as it was
    end: int
    sha256: str  # of those bytes
    moved_to: str  # path relative to the audit directory
    why: str

    def describe(self) -> str:
        return (
            f"{self.source} bytes {self.begin}-{self.end} sha256:{self.sha256} "
            f"moved to {self.moved_to}: {self.why}"
        )


@dataclass
class ChainState:
    seq: int  # next seq to assign == number of records in the chain
    prev: str  # hex hash of record seq-1 (the genesis value when seq == 0)
    genesis: str
    tree: merkle.CompactTree
    last_segment: int  # 0 when there is none yet
    checkpointed: int  # tree size of the verified checkpoint resumed from (0 if none)
    fresh: bool = True  # no verified checkpoint: a new chain begins
    adopted: int = 0  # records of the unsigned tail that verified and were kept
    accepted: str = ""  # what the operator accepted with --accept-recovery
    sealed_missing: str = ""  # the seal names records that are not on disk (rolled back)
    set_aside: list[SetAside] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Resume:
    end: int  # byte offset just after its line in the checkpoints file
    size: int
    head: str
    genesis: str
    frontier: list[bytes]
    segment: str


# -- the seal ---------------------------------------------------------------------------
def seal_message(origin: str, size: int, head: str) -> bytes:
    return f"{SEAL_CONTEXT}\n{origin}\n{size}\n{head}\n".encode()


def seal_line(origin: str, size: int, head: str, signature: bytes) -> bytes:
    """Fixed length (one pwrite replaces it whole): size in 20 digits, head, signature."""
    return f"{size:020d} {head} {base64.b64encode(signature).decode()}\n".encode()


def read_seal(path: Path, keys: tuple[PublicKey, ...], origin: str) -> tuple[int, str] | None:
    """(size, head) the writer last sealed, or None (absent, damaged, not ours)."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    parts = raw.rstrip(b"\n").split(b" ")
    if len(parts) != 3 or not parts[0].isdigit() or len(parts[1]) != 64:
        return None
    try:
        size, head = int(parts[0]), parts[1].decode("ascii")
        signature = base64.b64decode(parts[2], validate=True)
    except (ValueError, UnicodeDecodeError):
        return None
    message = seal_message(origin, size, head)
    if not any(key.verify(message, signature) for key in keys):
        return None
    return size, head


# -- step 1: the checkpoints file ---------------------------------------------------------
def _verified_entry(
    raw: bytes, keys: tuple[PublicKey, ...], origin: str, end: int
) -> _Resume | None:
    try:
        obj = json.loads(raw)
        signed = parse_signed_checkpoint(obj["note"])
        frontier = [bytes.fromhex(h) for h in obj["frontier"]]
        segment = str(obj.get("segment", ""))
        cp = signed.checkpoint
        tree = merkle.CompactTree(cp.size, frontier)
    except (ValueError, KeyError, TypeError, NoteError):
        return None
    if cp.origin != origin or verify_note(signed.note, keys)[0] is not SignatureCheck.VALID:
        return None
    if tree.root() != cp.root:
        return None
    return _Resume(end, cp.size, cp.head, cp.genesis, frontier, segment)


def _last_verified(data: bytes, keys: tuple[PublicKey, ...], origin: str) -> _Resume | None:
    best: _Resume | None = None
    pos = 0
    while (newline := data.find(b"\n", pos)) >= 0:
        entry = _verified_entry(data[pos:newline], keys, origin, newline + 1)
        if entry is not None and (best is None or entry.size >= best.size):
            best = entry  # a smaller size after a larger one is stale: never resumed from
        pos = newline + 1
    return best


# -- step 2: the unsigned tail -------------------------------------------------------------
def check_record(line: bytes, seq: int, prev: str, worker: int) -> tuple[bytes | None, str]:
    """(leaf hash, "") when `line` is record `seq` of this chain after `prev`;
    (None, why) otherwise."""
    if not is_canonical_line(line):
        return None, "not canonical JSON"
    parts = line_leaf(line)
    if parts is None or parts[0] != parts[1].hex().encode():
        return None, "its hash does not match its bytes"
    obj = json.loads(line)
    if obj.get("seq") != seq:
        return None, f"seq {obj.get('seq')!r} where seq {seq} comes next"
    if obj.get("prev") != prev:
        return None, f"does not chain to record {seq - 1} (prev)"
    if obj.get("worker") != worker:
        return None, "written for another worker"
    return parts[1], ""


def _find_head(data: bytes, size: int, head: str) -> int | None:
    """Byte offset just after record size-1 (whose hash is `head`) in `data`."""
    needle = b',"seq":%d,' % (size - 1)
    pos = 0
    while (at := data.find(needle, pos)) >= 0:
        begin = data.rfind(b"\n", 0, at) + 1
        end = data.find(b"\n", at)
        if end < 0:
            return None
        parts = line_leaf(data[begin:end])
        if parts is not None and parts[1].hex() == head and parts[0] == head.encode():
            return end + 1
        pos = end + 1
    return None


@dataclass
class _Tail:
    start: tuple[int, int] | None  # (segment index, byte offset) where the tail begins
    ends: list[tuple[int, int, int, bytes]] = field(default_factory=list)  # (seg, end, seq, leaf)
    why: str = ""  # why the walk stopped before the end


def _walk_tail(
    segments: tuple[Path, ...], start: tuple[int, int], seq: int, prev: str, worker: int
) -> _Tail:
    tail = _Tail(start)
    index, offset = start
    for i in range(index, len(segments)):
        data = segments[i].read_bytes()
        pos = offset if i == index else 0
        while pos < len(data):
            newline = data.find(b"\n", pos)
            if newline < 0:
                if i + 1 < len(segments):
                    break  # a write cut short, continued whole in the next segment
                tail.why = "an incomplete last line (a write cut short)"
                return tail
            leaf, why = check_record(data[pos:newline], seq, prev, worker)
            if leaf is None:
                tail.why = f"record at byte {pos}: {why}"
                return tail
            tail.ends.append((i, newline + 1, seq, leaf))
            seq, prev, pos = seq + 1, leaf.hex(), newline + 1
    return tail


# -- step 3: setting aside -------------------------------------------------------------------
def _pending_path(directory: Path, worker: int) -> Path:
    return directory / QUARANTINE_DIR / f"w{worker}.pending"


def _carried(directory: Path, worker: int) -> list[SetAside]:
    """Moves journalled by a start that died before its recovery record, checked
    against the quarantined bytes (nothing is stated that is not there)."""
    try:
        raw = _pending_path(directory, worker).read_bytes()
    except OSError:
        return []
    out: list[SetAside] = []
    for line in raw.splitlines():
        try:
            item = SetAside(**json.loads(line))
            target = (directory / item.moved_to).resolve()
            if (
                target.parent != (directory / QUARANTINE_DIR).resolve()
                or hashlib.sha256(target.read_bytes()).hexdigest() != item.sha256
            ):
                continue
        except (ValueError, TypeError, OSError):
            continue
        # The journal is unsigned: the statement says where it comes from.
        item = replace(
            item,
            why="journalled by a start that stopped before its recovery "
            f"record (unsigned journal; bytes checked): {item.why}",
        )
        if item not in out:
            out.append(item)
    return out


def clear_pending(directory: Path, worker: int) -> None:
    """The recovery record stating the journalled moves is written: drop the journal."""
    try:
        _pending_path(directory, worker).unlink()
    except FileNotFoundError:
        return
    fsync_dir(directory / QUARANTINE_DIR)


class _Mover:
    def __init__(self, directory: Path, clock: Callable[[], float], worker: int) -> None:
        self.directory = directory
        self.worker = worker
        self.stamp = f"{int(clock() * 1000)}-{secrets.token_hex(3)}"
        self.moved: list[SetAside] = []

    def _target(self, name: str, begin: int, end: int) -> Path:
        folder = self.directory / QUARANTINE_DIR
        folder.mkdir(exist_ok=True)
        return folder / f"{name}.{begin}-{end}.{self.stamp}"

    def cut(self, path: Path, begin: int, why: str) -> None:
        """Move bytes [begin, end of file) of `path` aside and truncate it there.
        A symlink is not followed (OSError): its target is no file of this log."""
        keep = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        try:
            self._cut(keep, path, begin, why)
        finally:
            os.close(keep)

    def _cut(self, keep: int, path: Path, begin: int, why: str) -> None:
        with os.fdopen(os.dup(keep), "rb") as fh:
            fh.seek(begin)
            data = fh.read()
        if not data:
            return
        end = begin + len(data)
        target = self._target(path.name, begin, end)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(target.parent)
        # Journalled before the bytes leave the segment (a crash here: stated next start).
        self._note(path.name, begin, end, hashlib.sha256(data).hexdigest(), target, why)
        os.ftruncate(keep, begin)
        os.fsync(keep)

    def whole(self, path: Path, why: str) -> None:
        data = path.read_bytes()
        target = self._target(path.name, 0, len(data))
        # Journalled before the move (a crash after it: stated by the next start).
        self._note(path.name, 0, len(data), hashlib.sha256(data).hexdigest(), target, why)
        os.rename(path, target)
        fsync_dir(target.parent)
        fsync_dir(self.directory)

    def _note(self, name: str, begin: int, end: int, digest: str, target: Path, why: str) -> None:
        moved = SetAside(name, begin, end, digest, str(target.relative_to(self.directory)), why)
        self.moved.append(moved)
        fd = os.open(
            _pending_path(self.directory, self.worker),
            os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW,
            0o640,
        )
        try:
            os.write(fd, json.dumps(asdict(moved)).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        log.warning(
            "audit_recovery_set_aside",
            file=name,
            begin=begin,
            end=end,
            sha256=digest,
            moved_to=moved.moved_to,
            why=why,
        )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover(
    directory: Path,
    worker: int,
    key: PublicKey,
    origin: str,
    *,
    accept_recovery: bool = False,
    clock: Callable[[], float],
    previous_keys: tuple[PublicKey, ...] = (),
) -> ChainState:
    """Verify the chain of `worker` on disk and say where to continue it (see above).
    `origin` is the chain's own (`<audit.origin>/w<N>`); `previous_keys` are keys
    rotated out (audit.previous_keys), trusted like `key` for what is on disk.
    Raises RecoveryRefused."""
    keys = (key, *previous_keys)
    files = discover(directory).get(worker, ChainFiles(worker, (), None))
    mover = _Mover(directory, clock, worker)
    carried = _carried(directory, worker)
    accepted: list[str] = []
    cp_path = directory / checkpoints_name(worker)
    data = cp_path.read_bytes() if cp_path.exists() else b""
    resume = _last_verified(data, keys, origin)
    cut = resume.end if resume is not None else 0
    trailing = data[cut:]
    if trailing:
        if b"\n" in trailing:
            what = (
                f"the last checkpoint in {cp_path.name} does not verify under the "
                f"configured key {key.name} for {origin}"
            )
            if not accept_recovery:
                raise RecoveryRefused(
                    f"audit chain w{worker}: {what}; refusing to sign over it (restore the "
                    "key or the file, or start with --accept-recovery to set it aside)"
                )
            accepted.append(what)
            why = "checkpoint lines that do not verify under the configured key"
        else:
            why = "an incomplete last checkpoint line (a write cut short)"
        mover.cut(cp_path, cut, why)
    segments = files.segments
    if resume is None:
        holding = [p for p in segments if p.stat().st_size]
        if holding:
            what = (
                f"{len(holding)} segment(s) hold records but no checkpoint verifies "
                f"under the configured key {key.name}"
            )
            if not accept_recovery:
                raise RecoveryRefused(
                    f"audit chain w{worker}: {what}; refusing to sign over them (restore "
                    "the checkpoints file or the key, or start with --accept-recovery to "
                    "set them aside and begin a new chain)"
                )
            accepted.append(what)
            for path in holding:
                mover.whole(path, "records with no checkpoint signed by the configured key")
        genesis = secrets.token_hex(32)
        state = ChainState(0, genesis, genesis, merkle.CompactTree(), 0, 0)
    else:
        state = _resume(directory, worker, keys, origin, resume, segments, mover)
    state.set_aside = [*carried, *(m for m in mover.moved if m not in carried)]
    state.accepted = "; ".join(accepted)
    chain = discover(directory).get(worker)
    state.last_segment = (
        max((segment_number(p) for p in chain.segments), default=0) if chain is not None else 0
    )
    return state


def _tail_start(
    segments: tuple[Path, ...], names: list[str], resume: _Resume
) -> tuple[int, int] | None:
    """(segment index, byte offset) just after the checkpoint's last record: in the
    segment its entry names, else (an entry written while no segment was open) in
    any segment, the newest first."""
    if resume.segment in names:
        order = [names.index(resume.segment)]
    else:
        order = list(range(len(segments) - 1, -1, -1))
    if resume.size == 0:
        return (order[0], 0) if resume.segment in names else (0, 0) if segments else None
    for index in order:
        offset = _find_head(segments[index].read_bytes(), resume.size, resume.head)
        if offset is not None:
            return index, offset
    return None


def _resume(
    directory: Path,
    worker: int,
    keys: tuple[PublicKey, ...],
    origin: str,
    resume: _Resume,
    segments: tuple[Path, ...],
    mover: _Mover,
) -> ChainState:
    tree = merkle.CompactTree(resume.size, resume.frontier)
    state = ChainState(resume.size, resume.head, resume.genesis, tree, 0, resume.size, fresh=False)
    names = [p.name for p in segments]
    start = _tail_start(segments, names, resume)
    if start is None:
        # The checkpoint's own last record is missing or damaged (verify reports it), so
        # no record after it can be placed: segments after the checkpoint's are set aside.
        if resume.segment in names:
            after = segment_number(segments[names.index(resume.segment)])
            for path in segments:
                if segment_number(path) > after and path.stat().st_size:
                    mover.whole(
                        path,
                        f"records after checkpoint {resume.size}, whose last record was not found",
                    )
        return state
    tail = _walk_tail(segments, start, resume.size, resume.head, worker)
    sealed = read_seal(directory / seal_name(worker), keys, origin)
    keep = 0
    if sealed is not None:
        for n, (_, _, seq, leaf) in enumerate(tail.ends, 1):
            if seq == sealed[0] - 1 and leaf.hex() == sealed[1]:
                keep = n
    if keep < len(tail.ends):
        why = "records that verify but that the writer never sealed (not written by it)"
    else:
        why = tail.why or "records after one that does not verify"
    adopted = tail.ends[:keep]
    found = adopted[-1][2] + 1 if adopted else resume.size
    if sealed is not None and sealed[0] > found:
        state.sealed_missing = (
            f"the writer's seal names {sealed[0]} records (head {sealed[1]}) but "
            f"{found} verify on disk: records {found}..{sealed[0] - 1} were lost or "
            "rolled back"
        )
        log.warning("audit_recovery_sealed_missing", worker=worker, sealed=sealed[0], found=found)
    if adopted:
        seg, end = adopted[-1][0], adopted[-1][1]
        tree.extend(leaf for *_, leaf in adopted)
        state.seq = adopted[-1][2] + 1
        state.prev = adopted[-1][3].hex()
        state.adopted = len(adopted)
        for i in sorted({a[0] for a in adopted}):
            _fsync(segments[i])
    else:
        seg, end = start
    if end < segments[seg].stat().st_size:
        mover.cut(segments[seg], end, why)
    for path in segments[seg + 1 :]:
        if path.stat().st_size:
            mover.whole(path, why)
    return state
