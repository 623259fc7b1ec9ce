"""The synchronous core of the audit writer: one worker's chain on disk.

Takes AuditEvents in order; assigns seq and prev, writes the lines, rotates
segments, signs checkpoints. Runs on the writer thread (or directly in tests and the
bench), never on the event loop: everything here blocks. Trusts its own directory
(see recovery.py) and holds the worker's lock file so that no second process can
write the same chain.

After an OSError the lines not yet written stay pending, in order; `flush_pending`
retries them in a fresh segment, so a line cut short in the old segment is left as
a torn fragment there and written whole in the new one. A checkpoint only ever
covers records fully handed to the kernel (and fsynced, unless fsync is "never").
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import structlog

from ..model import AuditEvent
from . import merkle
from .canonical import canonical_json
from .keys import PublicKey, SigningKey
from .note import Checkpoint, sign_note
from .record import build_lines
from .recovery import (
    QUARANTINE_DIR,
    ChainState,
    clear_pending,
    recover,
    seal_line,
    seal_message,
)
from .segment import (
    AppendFile,
    checkpoints_name,
    discover,
    fsync_dir,
    lock_name,
    seal_name,
    segment_name,
    segment_number,
)

log = structlog.get_logger(__name__)


class LockHeld(OSError):
    """Another live process writes this worker's chain."""


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ChainWriter:
    def __init__(
        self,
        directory: str | os.PathLike[str],
        worker: int,
        origin: str,
        key: SigningKey,
        *,
        segment_max_bytes: int = 64 * 1024 * 1024,
        segment_max_age: float = 3600.0,
        fsync: str = "checkpoint",
        clock: Callable[[], float],
        accept_recovery: bool = False,
        previous_keys: tuple[PublicKey, ...] = (),
    ) -> None:
        self.directory = Path(directory)
        self.worker = worker
        self.origin = f"{origin}/w{worker}"
        self._key = key
        self._max_bytes = segment_max_bytes
        self._max_age = segment_max_age
        self._fsync = fsync
        self._clock = clock
        self._lock_fd: int | None = None
        self._seal_fd: int | None = None
        self._last_text = ""
        self._accept_recovery = accept_recovery
        self._previous_keys = previous_keys
        self.recovered: ChainState | None = None  # what the last open() found (tests, logs)
        self._segment: AppendFile | None = None
        self._checkpoints: AppendFile | None = None
        self._state: ChainState | None = None
        self._lines: list[bytes] = []  # not yet written, in order
        self._leaves: list[bytes] = []  # their leaf hashes
        self._head = ""  # hex hash of the last record written
        self.last_checkpoint_size = -1
        self.last_checkpoint_time = clock()
        self.records_written = 0
        self.checkpoints_written = 0
        self._closed_seq = 0

    # -- lifecycle ------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._state is not None

    @property
    def next_seq(self) -> int:
        return self._state.seq if self._state else self._closed_seq

    @property
    def unsigned(self) -> int:
        """Records written but not yet covered by a checkpoint."""
        if self._state is None:
            return 0
        return self._state.tree.size - max(self.last_checkpoint_size, 0)

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(
            self.directory / lock_name(self.worker), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o640
        )  # never a planted link
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(11, f"another process writes audit chain w{self.worker}") from None
        self._lock_fd = fd
        try:
            state = recover(
                self.directory,
                self.worker,
                self._key.public,
                self.origin,
                accept_recovery=self._accept_recovery,
                clock=self._clock,
                previous_keys=self._previous_keys,
            )
            self._seal_fd = os.open(
                self.directory / seal_name(self.worker),
                os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW,
                0o640,
            )
            self._checkpoints = AppendFile(
                self.directory / checkpoints_name(self.worker), self._clock(), exclusive=False
            )
            self._open_segment(state.last_segment + 1)
        except BaseException:
            self._release()
            raise
        self._state = state
        self.recovered = state
        self._head = state.prev
        self.last_checkpoint_size = -1 if state.fresh else state.checkpointed
        self.last_checkpoint_time = self._clock()
        if state.set_aside or state.accepted or state.sealed_missing:
            self._recovery_record(state)
        if state.fresh or state.tree.size != state.checkpointed:
            # A new chain's genesis is signed before its first record; records adopted
            # from a crash tail (and the recovery record) are signed at once.
            self.checkpoint()
        if state.set_aside:
            clear_pending(self.directory, self.worker)  # stated and signed above

    def _recovery_record(self, state: ChainState) -> None:
        """The signed statement of what this start set aside and accepted."""
        log.warning(
            "audit_recovery",
            worker=self.worker,
            set_aside=len(state.set_aside),
            accepted=state.accepted or None,
            adopted=state.adopted,
        )
        self.append_fields(
            {
                "kind": "recovery",
                "time": rfc3339(self._clock()),
                "reason": "recovery_accepted" if state.accepted else "recovery_set_aside",
                "accept_recovery": bool(state.accepted),
                "accepted": state.accepted or None,
                "resumed_from_checkpoint": None if state.fresh else state.checkpointed,
                "adopted_records": state.adopted,
                "set_aside": [item.describe() for item in state.set_aside],
                "quarantine": QUARANTINE_DIR if state.set_aside else None,
                "sealed_missing": state.sealed_missing or None,
            }
        )

    def append_fields(self, fields: dict[str, object]) -> None:
        """Append one record of any flat field set (kind `recovery`): the general path."""
        state = self._require_state()
        record = dict(fields, seq=state.seq, prev=state.prev, worker=self.worker)
        body = canonical_json(record)
        leaf = hashlib.sha256(b"\x00" + body).digest()
        record["hash"] = leaf.hex()
        self._lines.append(canonical_json(record) + b"\n")
        self._leaves.append(leaf)
        state.prev = leaf.hex()
        state.seq += 1
        self.flush_pending()

    def _open_segment(self, number: int) -> None:
        path = self.directory / segment_name(self.worker, number)
        self._segment = AppendFile(path, self._clock())
        fsync_dir(self.directory)

    def close(self) -> None:
        """Final checkpoint, fsync, close, unlock. Raises OSError if the last write
        fails (the files are closed and the lock released regardless)."""
        try:
            if self._state is not None:
                self.flush_pending()
                self.checkpoint()
        finally:
            self._release()

    def close_quietly(self) -> None:
        """Close files and unlock without writing (after a failed close)."""
        self._release()

    def _release(self) -> None:
        for f in (self._segment, self._checkpoints):
            if f is not None:
                f.close()
        self._segment = self._checkpoints = None
        if self._seal_fd is not None:
            os.close(self._seal_fd)
            self._seal_fd = None
        if self._state is not None:
            self._closed_seq = self._state.seq
        self._state = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    # -- records --------------------------------------------------------------------
    def write(self, events: Sequence[AuditEvent]) -> None:
        """Append `events` as one write. On OSError they stay pending (in order)."""
        state = self._require_state()
        lines, leaves, state.prev = build_lines(
            events, seq=state.seq, prev=state.prev, worker=self.worker
        )
        self._lines += lines
        self._leaves += leaves
        state.seq += len(lines)
        self.flush_pending()

    def flush_pending(self) -> None:
        if not self._lines:
            return
        self._require_state()
        if self._segment is None:
            self._open_segment(self._next_segment_number())
        segment = self._segment
        assert segment is not None
        before = segment.size
        try:
            segment.write(b"".join(self._lines))
            if self._fsync == "always":
                segment.sync()
        except OSError:
            self._keep_unwritten(segment.size - before)
            segment.close()  # a fresh segment next time; a cut line stays a fragment
            self._segment = None
            raise
        self._written(len(self._lines))
        self._seal()

    def _seal(self) -> None:
        """Sign (size, head) of what was just handed to the kernel and put it in
        w<N>.seal with one pwrite: recovery adopts an unsigned tail only up to the
        sealed record, so a record appended by anyone without the key never is."""
        state = self._require_state()
        if self._seal_fd is None:
            return
        size = state.tree.size
        signature = self._key.sign(seal_message(self.origin, size, self._head))
        os.pwrite(self._seal_fd, seal_line(self.origin, size, self._head, signature), 0)

    def _written(self, count: int) -> None:
        """The first `count` pending lines reached the kernel: they join the tree."""
        state = self._require_state()
        leaves = self._leaves[:count]
        state.tree.extend(leaves)
        self.records_written += count
        self._head = leaves[-1].hex()
        del self._lines[:count], self._leaves[:count]

    def _keep_unwritten(self, written: int) -> None:
        done = count = 0
        for line in self._lines:
            if done + len(line) > written:
                break
            done += len(line)
            count += 1
        if count:
            self._written(count)

    @property
    def pending(self) -> int:
        return len(self._lines)

    # -- checkpoints and rotation ---------------------------------------------------
    def checkpoint(self) -> None:
        state = self._require_state()
        segment, checkpoints = self._segment, self._checkpoints
        if checkpoints is None:
            raise OSError(9, "checkpoints file is closed")
        if segment is not None and self._fsync != "never":
            segment.sync()
        now = self._clock()
        cp = Checkpoint(
            self.origin, state.tree.size, state.tree.root(), self._head, state.genesis, rfc3339(now)
        )
        if cp.text() == self._last_text:
            return  # the same tree in the same millisecond: nothing new to sign
        entry = {
            "frontier": [h.hex() for h in state.tree.frontier()],
            "note": sign_note(cp.text(), self._key),
            "segment": segment.path.name if segment is not None else "",
        }
        checkpoints.write(canonical_json(entry) + b"\n")
        if self._fsync != "never":
            checkpoints.sync()
        self._last_text = cp.text()
        self.last_checkpoint_size = state.tree.size
        self.last_checkpoint_time = now
        self.checkpoints_written += 1

    def rotation_due(self) -> bool:
        segment = self._segment
        if segment is None or segment.size == 0:
            return False
        return segment.size >= self._max_bytes or self._clock() - segment.opened_at >= self._max_age

    def rotate(self) -> None:
        """Sign what the old segment holds, make it durable, start the next one."""
        if self.unsigned:
            self.checkpoint()
        old = self._segment
        if old is not None:
            if self._fsync != "never":
                old.sync()
            old.close()
            self._segment = None
        self._open_segment(self._next_segment_number())

    def _next_segment_number(self) -> int:
        # The directory is the truth after a failure (a half-created file counts).
        chain = discover(self.directory).get(self.worker)
        segments = chain.segments if chain is not None else ()
        return max((segment_number(p) for p in segments), default=0) + 1

    def _require_state(self) -> ChainState:
        if self._state is None:
            raise OSError(9, "audit chain is not open")
        return self._state

    @property
    def tree(self) -> merkle.CompactTree:
        return self._require_state().tree
