"""The writer thread: drains the audit queue into the chain, signs checkpoints on
time, rotates segments, and keeps retrying while the disk fails.

Takes events from a `Mailbox` filled by `AuditLog.append` on the event loop;
returns nothing, but publishes `healthy` (False while the last attempt to write
failed) and counters. All blocking work (hashing, file I/O, fsync, signing) happens
on this thread.

The hand-off wakes the writer in batches, not per record (a profile of the proxy
under load found a per-record wake-up, Condition.notify on the loop and
Condition.wait here, at 28% of all samples, the two threads trading the GIL):
`Mailbox.put` is a deque append, and it sets the Event only when the writer has
parked itself because it found nothing to do. The writer then writes at most once
per flush interval (`audit.flush_interval_ms`, default 50 ms): it waits until half
the interval has passed since the oldest queued record was appended (FLUSH_TARGET),
so the records of that time arrive, then drains everything queued as one write; the
other half is the margin that keeps the documented bound under load (a fixed wait
counted from the wake-up let records wait 65.7 ms at 1,100 req/s with kill -9).
Every wake-up of this thread costs the process far more than a record does
(bench/bench_audit.py, "paced" rows: at 1,200 records/s, 69 us of CPU per record
when the writer wrote every 5 ms, 29 us at 50 ms, 19 us at 100 ms), so the interval is the knob
between CPU and how long a record stays in memory before the kernel has it (records
are fsynced and signed at checkpoints either way). A full batch (BATCH records) does
not wait. While the writer is busy, appends cost the loop a deque append and nothing
else.

Checkpoint policy (`CheckpointPolicy.due`): every N records, every T seconds when
anything was written since the last checkpoint, once per heartbeat when idle, at
segment rotation and at shutdown. Time comes from the injected clock.
"""

from __future__ import annotations

import errno
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from ..metrics import Metrics
from ..model import AuditEvent
from .chain import ChainWriter
from .recovery import RecoveryRefused

log = structlog.get_logger(__name__)

BATCH = 256  # events per write: bounds how long the thread holds the GIL at once
RETRY_SECONDS = 1.0
MAX_WAIT_SECONDS = 1.0
FLUSH_INTERVAL_SECONDS = 0.05  # the default of audit.flush_interval_ms
# The writer aims to write a record this fraction of flush_interval after it was
# appended; the rest of the interval is margin for what delays a write (the thread
# waiting for the GIL, a checkpoint's fsync and signature, the write itself), so that
# flush_interval_ms bounds how long an answered record stays in memory only.
FLUSH_TARGET = 0.5


class Mailbox:
    """The queue between the event loop (put) and the writer thread (everything
    else). A deque's append and popleft are atomic, so neither side takes a lock;
    the Event is set only on the transition "writer parked -> work to do"."""

    __slots__ = ("items", "wake", "parked", "wakeups", "first_at")

    def __init__(self) -> None:
        self.items: deque[AuditEvent] = deque()
        self.wake = threading.Event()
        self.parked = False
        self.wakeups = 0  # times put() had to wake the writer (for the bench and stats)
        # time.monotonic() when the queue last went from empty to not empty: about when
        # the oldest queued record was appended (the writer's flush deadline counts
        # from it, not from when the writer happened to look)
        self.first_at = 0.0

    def __len__(self) -> int:
        return len(self.items)

    def put(self, event: AuditEvent) -> None:
        """Event loop side: never blocks (Event.set takes an uncontended lock only
        when the writer sleeps for lack of work)."""
        if not self.items:
            self.first_at = time.monotonic()
        self.items.append(event)
        if self.parked:
            self.parked = False
            self.wakeups += 1
            self.wake.set()

    def park(self, timeout: float) -> bool:
        """Writer side: sleep until a record arrives or `timeout` passes. True when
        woken by a record. Announcing `parked` before the last look at the queue
        means a record appended in between is either seen here or wakes us."""
        self.parked = True
        woke = bool(self.items) or self.wake.wait(timeout)
        self.parked = False
        self.wake.clear()
        return woke


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    every_records: int
    interval: float
    heartbeat: float

    def due(self, *, now: float, unsigned: int, last: float) -> bool:
        elapsed = now - last
        return (
            unsigned >= self.every_records
            or (unsigned > 0 and elapsed >= self.interval)
            or elapsed >= self.heartbeat
        )

    def wait(self, *, now: float, unsigned: int, last: float) -> float:
        """Seconds until a checkpoint falls due with no new record (for the sleep)."""
        deadline = last + (self.interval if unsigned else self.heartbeat)
        return max(0.0, min(deadline - now, MAX_WAIT_SECONDS))


class WriterThread(threading.Thread):
    def __init__(
        self,
        chain: ChainWriter,
        events: Mailbox,
        policy: CheckpointPolicy,
        metrics: Metrics,
        clock: Callable[[], float],
        flush_interval: float = FLUSH_INTERVAL_SECONDS,
    ) -> None:
        super().__init__(name=f"ztproxy-audit-w{chain.worker}", daemon=True)
        self.chain = chain
        self.events = events
        self.policy = policy
        self.flush_interval = flush_interval
        self.metrics = metrics
        self.clock = clock
        self.healthy = False
        self.error = ""  # errno name of the last failure, for readiness and logs
        self.first_attempt = threading.Event()
        self.stop_requested = threading.Event()
        self._held: list[AuditEvent] = []  # taken from the queue, not yet in the chain
        self.flushes = 0  # steps that had records to write (for stats and the bench)
        self._stopping = False

    def stop(self) -> None:
        """Ask the thread to write what is queued, sign and end (any thread)."""
        self.stop_requested.set()
        self.events.wake.set()

    def run(self) -> None:
        while True:
            try:
                self._step()
                self._set_healthy(True, "")
            except OSError as exc:
                self._set_healthy(False, exc)
            except RecoveryRefused as exc:  # only when the first open failed on I/O
                self._set_healthy(False, f"recovery refused: {exc}")
            self.first_attempt.set()
            self.metrics.audit_queue_depth.set(len(self.events) + len(self._held))
            if self._stopping:
                self._finish()
                return
            if not self.healthy:
                self.stop_requested.wait(RETRY_SECONDS)
                self._stopping = self.stop_requested.is_set()
            else:
                self._take(
                    self.policy.wait(
                        now=self.clock(),
                        unsigned=self.chain.unsigned,
                        last=self.chain.last_checkpoint_time,
                    )
                )

    def _take(self, timeout: float) -> None:
        """Move everything queued to `_held`. When nothing is queued, park for up to
        `timeout` (the next checkpoint); once there is a record, wait out the flush
        interval so that everything of that time goes as one write (not when a
        whole batch is already there). A stop request ends either wait at once and
        means: finish after this step (AuditLog refuses appends before it asks, so
        the queue no longer grows)."""
        events, stop = self.events, self.stop_requested
        if not stop.is_set():
            if events.items or (timeout > 0 and events.park(timeout)):
                if len(events) < BATCH:
                    deadline = events.first_at + self.flush_interval * FLUSH_TARGET
                    wait = deadline - time.monotonic()
                    if wait > 0:
                        stop.wait(wait)
        self._stopping = stop.is_set()
        self._drain()

    def _drain(self) -> None:
        items, keep = self.events.items, self._held.append
        for _ in range(len(items)):  # only what is there now: bounded
            keep(items.popleft())

    def _step(self) -> None:
        chain = self.chain
        if not chain.is_open:
            chain.open()
        chain.flush_pending()
        held, done = self._held, 0
        if held:
            self.flushes += 1
        try:
            while done < len(held):
                # Stop a batch where a checkpoint falls due, so checkpoints land every N.
                limit = min(BATCH, max(1, self.policy.every_records - chain.unsigned))
                batch = held[done : done + limit]
                done += len(batch)  # in the chain now: on OSError it stays pending there
                before = chain.records_written
                try:
                    chain.write(batch)
                finally:
                    self.metrics.audit_records.inc(chain.records_written - before)
                self._maybe_checkpoint()
        finally:
            del held[:done]
        self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        chain = self.chain
        if chain.rotation_due():
            self._counting(chain.rotate)
        if self.policy.due(
            now=self.clock(), unsigned=chain.unsigned, last=chain.last_checkpoint_time
        ):
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
        self._drain()
        try:
            self._step()
            self._counting(chain.close)
        except OSError as exc:
            self.metrics.audit_failures.labels(reason="shutdown_write_failed").inc()
            log.error(
                "audit_close_failed",
                worker=chain.worker,
                error=_errno(exc),
                records_not_written=len(self._held) + chain.pending,
            )
            chain.close_quietly()
        self.metrics.audit_queue_depth.set(0)

    def _set_healthy(self, healthy: bool, exc: OSError | str) -> None:
        error = "" if healthy else _errno(exc)
        if healthy != self.healthy or error != self.error:
            if healthy:
                log.info("audit_writable", worker=self.chain.worker)
            else:
                self.metrics.audit_failures.labels(reason="write_failed").inc()
                log.error(
                    "audit_write_failed",
                    worker=self.chain.worker,
                    error=error,
                    pending=self.chain.pending + len(self._held),
                    queued=len(self.events),
                )
        self.healthy = healthy
        self.error = error


def _errno(exc: OSError | str) -> str:
    if isinstance(exc, str):
        return exc
    name = errno.errorcode.get(exc.errno or 0, "EIO")
    return f"{name}: {exc.strerror or type(exc).__name__}"
