"""A real process that appends audit records through AuditLog; test_crash.py drives it.

    python writer_process.py load DIR KEY     append under load until killed
    python writer_process.py fsize DIR KEY    hit a file size limit (EFBIG), recover
    python writer_process.py paced DIR KEY STAMPS RATE
                                              append RATE records/s until killed; the
                                              monotonic ns of each append go to STAMPS
                                              (a shared mmap: they survive SIGKILL)

Prints one JSON object per line on stdout for the parent to follow.
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import sys
import time

import structlog

from ztproxy.audit import AuditLog
from ztproxy.config.audit import AuditConfig
from ztproxy.model import AuditEvent


def ev(i: int) -> AuditEvent:
    return AuditEvent(
        kind="request",
        time="2026-11-28T01:02:03.456Z",
        request_id=f"req-{i}",
        source_address="127.0.0.1",
        reason="allowed",
        decision="allow",
        status=200,
        latency_us=i,
        host="payments.internal",
        path=f"/api/v1/charges/{i}",
        source_spiffe_id="spiffe://corp/ns/a/sa/b",
        user_subject="alice",
        destination_service="payments",
        policy_input_sha256="cd" * 32,
    )


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def until(predicate, seconds: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def load(directory: str, key: str) -> None:
    log = AuditLog(
        AuditConfig(
            dir=directory,
            signing_key=key,
            checkpoint_every_records=300,
            checkpoint_interval_seconds=0.05,
            segment_max_bytes=200_000,
            queue_size=5000,
        )
    )
    await log.start()
    say(started=True)
    n = 0
    deadline = time.monotonic() + 60  # bounded even if nobody kills us
    while time.monotonic() < deadline:
        for _ in range(200):
            if log.accepting():  # as the proxy does: 503 instead of an unrecorded request
                log.append(ev(n))
                n += 1
        await asyncio.sleep(0)
    await log.close()


async def fsize(directory: str, key: str, mode: str) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, hard))
    log = AuditLog(
        AuditConfig(
            dir=directory,
            signing_key=key,
            on_failure=mode,  # type: ignore[arg-type]
            checkpoint_every_records=1000,
        )
    )
    await log.start()
    for i in range(100):
        log.append(ev(i))
    failed = await until(lambda: not log.readiness()["audit_healthy"], 5)
    say(phase="disk full", failed=failed, accepting=log.accepting(), **log.readiness())
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    healed = await until(lambda: log.readiness()["audit_healthy"], 5)
    await until(lambda: log.stats()["records_written"] == 100, 5)
    say(phase="recovered", healed=healed, accepting=log.accepting(), **log.readiness())
    for i in range(100, 110):
        log.append(ev(i))
    await log.close()
    say(phase="closed", written=log.stats()["records_written"])


async def paced(directory: str, key: str, stamps_path: str, rate: float) -> None:
    import mmap
    import struct

    slots = 200_000
    with open(stamps_path, "r+b") as fh:
        fh.truncate(8 * slots)
        stamps = mmap.mmap(fh.fileno(), 8 * slots)
    pack = struct.Struct("<q").pack_into
    log = AuditLog(
        AuditConfig(
            dir=directory,
            signing_key=key,
            flush_interval_ms=50.0,
            checkpoint_every_records=1000,
            queue_size=50_000,
        )
    )
    await log.start()
    say(started=True)
    t0 = time.monotonic()
    n = 0
    while n < slots:  # bounded even if nobody kills us (about 3 minutes at 1,100/s)
        due = min(slots, int((time.monotonic() - t0) * rate))
        while n < due:
            log.append(ev(n))  # the proxy answers right after it appends
            pack(stamps, 8 * n, time.monotonic_ns())
            n += 1
        await asyncio.sleep(0.001)
    await log.close()


if __name__ == "__main__":
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    what, directory, key = sys.argv[1:4]
    if what == "load":
        asyncio.run(load(directory, key))
    elif what == "paced":
        asyncio.run(paced(directory, key, sys.argv[4], float(sys.argv[5])))
    else:
        asyncio.run(fsize(directory, key, sys.argv[4]))
