"""The writer thread: drains the audit queue into the chain, signs checkpoints on
time, rotates segments, and keeps retrying while the disk fails.

Takes events from a `queue.SimpleQueue` filled by `AuditLog.append` on the event
loop (a C-level put: no lock the loop could wait on); returns nothing, but publishes
`healthy` (False while the last attempt to write failed) and counters. All blocking
work (hashing, file I/O, fsync, signing) happens on this thread.

Checkpoint policy (`CheckpointPolicy.due`): every N records, every T seconds when
anything was written since the last checkpoint, once per heartbeat when idle, at
segment rotation and at shutdown. Time comes from the injected clock.
"""

from __future__ import annotations

import errno
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from ..metrics import Metrics
from ..model import AuditEvent
from .chain import ChainWriter

log = structlog.get_logger(__name__)

BATCH = 256  # events per write: bounds how long the thread holds the GIL at once
RETRY_SECONDS = 1.0
MAX_WAIT_SECONDS = 1.0
STOP = object()  # the sentinel `AuditLog.close` puts on the queue


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    every_records: int
    interval: float
    heartbeat: float

    def due(self, *, now: float, unsigned: int, last: float) -> bool:
        elapsed = now - last
        return (unsigned >= self.every_records
                or (unsigned > 0 and elapsed >= self.interval)
                or elapsed >= self.heartbeat)

    def wait(self, *, now: float, unsigned: int, last: float) -> float:
        """Seconds until a checkpoint falls due with no new record (for the sleep)."""
        deadline = last + (self.interval if unsigned else self.heartbeat)
        return max(0.0, min(deadline - now, MAX_WAIT_SECONDS))


class WriterThread(threading.Thread):
    def __init__(self, chain: ChainWriter, events: queue.SimpleQueue[object],
                 policy: CheckpointPolicy, metrics: Metrics,
                 clock: Callable[[], float]) -> None:
        super().__init__(name=f"ztproxy-audit-w{chain.worker}", daemon=True)
        self.chain = chain
        self.events = events
        self.policy = policy
        self.metrics = metrics
        self.clock = clock
        self.healthy = False
        self.error = ""  # errno name of the last failure, for readiness and logs
        self.first_attempt = threading.Event()
        self.stop_requested = threading.Event()
        self._held: list[AuditEvent] = []  # taken from the queue, not yet in the chain
        self._stopping = False

    def run(self) -> None:
        while True:
            try:
                self._step()
                self._set_healthy(True, "")
            except OSError as exc:
                self._set_healthy(False, exc)
            self.first_attempt.set()
            self.metrics.audit_queue_depth.set(self.events.qsize() + len(self._held))
            if self._stopping:
                self._finish()
                return
            if not self.healthy:
                self.stop_requested.wait(RETRY_SECONDS)
                self._stopping = self.stop_requested.is_set()
            else:
                self._take(self.policy.wait(now=self.clock(), unsigned=self.chain.unsigned,
                                            last=self.chain.last_checkpoint_time))

    def _take(self, timeout: float) -> None:
        """Move up to one batch from the queue to `_held`, waiting `timeout` for the
        first event. Seeing STOP means: finish after this step."""
        try:
            item = self.events.get(timeout=timeout) if timeout > 0 else \
                self.events.get_nowait()
        except queue.Empty:
            return
        while True:
            if item is STOP:
                self._stopping = True
            else:
                self._held.append(item)  # type: ignore[arg-type]
            if len(self._held) >= BATCH:
                return
            try:
                item = self.events.get_nowait()
            except queue.Empty:
                return

    def _step(self) -> None:
        chain = self.chain
        if not chain.is_open:
            chain.open()
        chain.flush_pending()
        while self._held:
            # Stop a batch where a checkpoint falls due, so checkpoints land every N.
            limit = min(BATCH, max(1, self.policy.every_records - chain.unsigned))
            batch, self._held = self._held[:limit], self._held[limit:]
            before = chain.records_written
            try:
                chain.write(batch)  # on OSError the batch stays pending in the chain
            finally:
                self.metrics.audit_records.inc(chain.records_written - before)
            self._maybe_checkpoint()
        self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        chain = self.chain
        if chain.rotation_due():
            self._counting(chain.rotate)
        if self.policy.due(now=self.clock(), unsigned=chain.unsigned,
                           last=chain.last_checkpoint_time):
            self._counting(chain.checkpoint)

    def _counting(self, action: Callable[[], None]) -> None:
        before = self.chain.checkpoints_written
        try:
            action()
        finally:
            self.metrics.audit_checkpoints.inc(self.chain.checkpoints_written - before)

    def _finish(self) -> None:
        """Write what is left (the queue no longer grows: AuditLog refuses appends
        once closing), then the final checkpoint. One try: shutdown must end."""
        chain = self.chain
        while True:
            try:
                item = self.events.get_nowait()
            except queue.Empty:
                break
            if item is not STOP:
                self._held.append(item)  # type: ignore[arg-type]
        try:
            self._step()
            self._counting(chain.close)
        except OSError as exc:
            self.metrics.audit_failures.labels(reason="shutdown_write_failed").inc()
            log.error("audit_close_failed", worker=chain.worker, error=_errno(exc),
                      records_not_written=len(self._held) + chain.pending)
            chain.close_quietly()
        self.metrics.audit_queue_depth.set(0)

    def _set_healthy(self, healthy: bool, exc: OSError | str) -> None:
        error = "" if healthy else _errno(exc)
        if healthy != self.healthy or error != self.error:
            if healthy:
                log.info("audit_writable", worker=self.chain.worker)
            else:
                self.metrics.audit_failures.labels(reason="write_failed").inc()
                log.error("audit_write_failed", worker=self.chain.worker, error=error,
                          pending=self.chain.pending + len(self._held),
                          queued=self.events.qsize())
        self.healthy = healthy
        self.error = error


def _errno(exc: OSError | str) -> str:
    if isinstance(exc, str):
        return exc
    name = errno.errorcode.get(exc.errno or 0, "EIO")
    return f"{name}: {exc.strerror or type(exc).__name__}"
