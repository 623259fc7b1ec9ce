"""`AuditLog`: the pipeline's audit sink (seams.AuditSink), one per worker process.

Takes `model.AuditEvent`s on the event loop; `append` only puts them on a bounded
in-memory queue (writer.Mailbox: a deque append, no lock the loop could wait on,
no I/O; the writer thread is woken only when it had parked for lack of work, and
then takes whole batches), and the writer thread does canonicalization, hashing,
file I/O, fsync and signing. Trusts the events to hold
no secret (the model's contract); it never adds anything from a request.

Back-pressure, so that nothing is lost silently:
- queue depth >= queue_size, or the writer failing to write: `accepting()` turns
  False (on_failure: deny) and the pipeline answers 503 audit_unavailable until the
  queue has drained to half or the disk is writable again. Records of requests
  already in flight are still queued, up to twice queue_size; past that a record is
  dropped, counted (ztproxy_audit_failures{reason="dropped"}) and logged.
- on_failure: allow keeps `accepting()` True, logs every failure loudly, and
  `readiness()["audit_healthy"]` shows the degraded state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

import structlog

from ..config.audit import AuditConfig
from ..metrics import Metrics
from ..model import AuditEvent
from .chain import ChainWriter
from .keys import load_public_key, load_signing_key
from .recovery import RecoveryRefused
from .writer import CheckpointPolicy, Mailbox, WriterThread

log = structlog.get_logger(__name__)

CLOSE_TIMEOUT_SECONDS = 30.0
START_TIMEOUT_SECONDS = 10.0


class AuditLog:
    def __init__(
        self,
        config: AuditConfig,
        *,
        worker_id: int = 0,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.worker_id = worker_id
        self.metrics = metrics if metrics is not None else Metrics()
        self._clock = clock
        self._queue = Mailbox()
        self._soft_limit = config.queue_size
        self._hard_limit = 2 * config.queue_size
        self._low_water = config.queue_size // 2
        self._allow = config.on_failure == "allow"
        self._overloaded = False
        self._closed = False
        self._dropped = 0
        self._thread: WriterThread | None = None

    # -- the hot path (event loop) ------------------------------------------------------
    def append(self, event: AuditEvent) -> None:
        depth = len(self._queue)
        if depth >= self._hard_limit or self._closed:
            self._drop("closed" if self._closed else "dropped")
            return
        self._queue.put(event)
        if depth + 1 >= self._soft_limit and not self._overloaded:
            self._overloaded = True
            self.metrics.audit_failures.labels(reason="queue_full").inc()
            log.error(
                "audit_queue_full",
                worker=self.worker_id,
                depth=depth + 1,
                on_failure=self.config.on_failure,
            )

    def _drop(self, reason: str) -> None:
        self._dropped += 1
        self.metrics.audit_failures.labels(reason=reason).inc()
        if self._dropped == 1 or self._dropped % 1000 == 0:
            log.error(
                "audit_record_dropped",
                worker=self.worker_id,
                reason=reason,
                dropped_total=self._dropped,
            )

    def accepting(self) -> bool:
        if self._overloaded and len(self._queue) <= self._low_water:
            self._overloaded = False
            log.info("audit_queue_drained", worker=self.worker_id)
        if self._allow:
            return not self._closed
        thread = self._thread
        return not self._closed and not self._overloaded and thread is not None and thread.healthy

    def readiness(self) -> Mapping[str, bool]:
        thread = self._thread
        healthy = (
            thread is not None and thread.healthy and not self._overloaded and not self._closed
        )
        return {"audit_accepting": self.accepting(), "audit_healthy": healthy}

    def stats(self) -> Mapping[str, float]:
        thread = self._thread
        chain = thread.chain if thread is not None else None
        return {
            "queue_depth": float(len(self._queue)),
            "records_written": float(chain.records_written if chain else 0),
            "checkpoints": float(chain.checkpoints_written if chain else 0),
            "next_seq": float(chain.next_seq if chain else 0),
            "dropped": float(self._dropped),
            "writer_wakeups": float(self._queue.wakeups),
            "writer_flushes": float(thread.flushes if thread is not None else 0),
            "healthy": 1.0 if thread is not None and thread.healthy else 0.0,
            "seconds_since_checkpoint": (self._clock() - chain.last_checkpoint_time)
            if chain
            else 0.0,
        }

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the key, verify and continue the chain on disk, and start the writer
        thread. Raises KeyFileError for an unusable key and RecoveryRefused for a
        chain that does not verify (unless audit.accept_recovery). A directory that
        cannot be written does not raise: the writer keeps retrying and `accepting()`
        says False meanwhile (deny)."""
        if self._thread is not None:
            return
        cfg = self.config
        key = await asyncio.to_thread(load_signing_key, cfg.signing_key)
        previous = tuple(load_public_key(path) for path in cfg.previous_keys)
        chain = ChainWriter(
            cfg.dir,
            self.worker_id,
            cfg.origin,
            key,
            segment_max_bytes=cfg.segment_max_bytes,
            segment_max_age=cfg.segment_max_age_seconds,
            fsync=cfg.fsync,
            clock=self._clock,
            accept_recovery=cfg.accept_recovery,
            previous_keys=previous,
        )
        try:
            # Recovery runs here, before anything is served: a chain that cannot be
            # continued without the operator raises RecoveryRefused (one line). A disk
            # that cannot be written is left to the writer thread, which retries.
            await asyncio.to_thread(chain.open)
        except RecoveryRefused as exc:
            log.error("audit_recovery_refused", worker=self.worker_id, reason=str(exc))
            raise
        except OSError as exc:
            log.error("audit_open_failed", worker=self.worker_id, error=str(exc))
        policy = CheckpointPolicy(
            cfg.checkpoint_every_records, cfg.checkpoint_interval_seconds, cfg.heartbeat_seconds
        )
        thread = WriterThread(
            chain,
            self._queue,
            policy,
            self.metrics,
            self._clock,
            flush_interval=cfg.flush_interval_ms / 1000,
        )
        self._thread = thread
        thread.start()
        await asyncio.to_thread(thread.first_attempt.wait, START_TIMEOUT_SECONDS)
        if not thread.healthy:
            log.error(
                "audit_not_writable_at_start",
                worker=self.worker_id,
                error=thread.error,
                on_failure=cfg.on_failure,
            )

    async def close(self) -> None:
        """Write what is queued, sign a final checkpoint, fsync, stop the thread."""
        thread = self._thread
        self._closed = True
        if thread is None:
            if len(self._queue):
                log.error(
                    "audit_closed_before_start",
                    worker=self.worker_id,
                    records_not_written=len(self._queue),
                )
            return
        thread.stop()
        await asyncio.to_thread(thread.join, CLOSE_TIMEOUT_SECONDS)
        if thread.is_alive():
            log.error("audit_close_timeout", worker=self.worker_id, queued=len(self._queue))
