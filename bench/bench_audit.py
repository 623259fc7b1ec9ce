"""Audit log throughput on one core: appending (the writer path, fsync at checkpoints)
and offline verification, each beside a baseline measured in the same run.

    /work/venv/bin/python bench/bench_audit.py [--records 200000] [--fsync checkpoint]
                                               [--repeat 3] [--cpu 0]

Targets (issue 7): append >= 50,000 records/s, verify >= 200,000 records/s.
The append rows run pinned to one CPU (--cpu, -1 to leave it free), so "one core"
is literal: the event loop and the writer thread share it, as in a proxy worker.
Verify is shown on one core and on all of them (an auditor's machine). Each
row runs --repeat times, interleaved with the others, and shows the best and the
median (this machine's speed drifts by up to 2x from minute to minute; the baselines
measured in the same rounds are the yardstick). Bounded: at most --records records
per row, in a temporary directory removed after.

Rows:
  baseline: json.dumps + write   what a plain JSON Lines logger costs (no chain)
  records: general path          RFC 8785 via canonical_json on a dict, the reference
  records: fast path             record.build_lines (the writer's encoder + hashes)
  chain writer                   ChainWriter.write + checkpoints (no thread)
  AuditLog.append + writer       the pipeline's path: append on the loop, writer thread
  baseline: read + sha256        read the segment and hash each line, nothing else
  verify, 1 process              verify_directory(workers=1): chain, roots, signatures
  verify, all cores              the same with the walk fanned out (fanout.py)

Then the "paced" rows: what the audit log costs a proxy worker at a steady request
rate (--rate, 1,200 records/s, about ztproxy's rate on one core here), for several
`flush_interval_ms` values. The loop appends on a 2 ms tick, as requests would come;
the figure is the process's CPU time (both threads) per record minus that of the same
paced loop appending to nothing. At a steady rate the cost is dominated by how often
the writer thread wakes up, not by the records.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ztproxy.audit import AuditLog
from ztproxy.audit.canonical import canonical_json
from ztproxy.audit.chain import ChainWriter
from ztproxy.audit.keys import generate_keypair, load_public_key, load_signing_key
from ztproxy.audit.record import build_lines, record_fields
from ztproxy.audit.verify import verify_directory
from ztproxy.config.audit import AuditConfig
from ztproxy.model import AuditEvent


def events(n: int) -> list[AuditEvent]:
    return [
        AuditEvent(
            kind="request",
            time="2026-11-28T01:02:03.456Z",
            request_id=f"{i:024x}",
            source_address="10.1.2.3",
            reason="allowed" if i % 5 else "policy_denied",
            decision="allow" if i % 5 else "deny",
            status=200 if i % 5 else 403,
            latency_us=1000 + i % 977,
            source_spiffe_id="spiffe://corp.example/ns/prod/sa/checkout",
            source_cert_sha256="ab" * 32,
            user_issuer="https://idp.corp.example",
            user_subject="alice@corp.example",
            device_id="dev-1234",
            method="GET",
            host="payments.internal",
            path=f"/api/v1/charges/{i}",
            destination_service="payments",
            route="payments-api",
            policy_revision="rev-42",
            policy_input_sha256="cd" * 32,
            policy_reasons=("ok",),
        )
        for i in range(n)
    ]


def baseline_append(evs: list[AuditEvent], path: Path) -> None:
    with path.open("wb") as fh:
        for i in range(0, len(evs), 256):
            fh.write(b"".join(json.dumps(e.to_dict()).encode() + b"\n" for e in evs[i : i + 256]))
        fh.flush()
        os.fsync(fh.fileno())


def general_records(evs: list[AuditEvent]) -> None:
    prev = "00" * 32
    for seq, e in enumerate(evs):
        body = canonical_json(record_fields(e, seq=seq, prev=prev, worker=0))
        prev = hashlib.sha256(b"\x00" + body).hexdigest()


def fast_records(evs: list[AuditEvent]) -> None:
    prev = "00" * 32
    for i in range(0, len(evs), 256):
        _, _, prev = build_lines(evs[i : i + 256], seq=i, prev=prev, worker=0)


def chain_append(evs: list[AuditEvent], directory: Path, key_path: Path, fsync: str) -> None:
    chain = ChainWriter(
        directory, 0, "bench", load_signing_key(key_path), fsync=fsync, clock=time.time
    )
    chain.open()
    for i in range(0, len(evs), 250):
        chain.write(evs[i : i + 250])
        if (i + 250) % 1000 == 0:
            chain.checkpoint()
    chain.close()


def audit_log_append(
    evs: list[AuditEvent], directory: Path, key_path: Path, fsync: str, wakeups: list[float]
) -> None:
    async def run() -> None:
        log = AuditLog(
            AuditConfig(
                dir=str(directory), signing_key=str(key_path), fsync=fsync, queue_size=len(evs) + 1
            )
        )  # type: ignore[arg-type]
        await log.start()
        for i, e in enumerate(evs):
            log.append(e)
            if i % 1000 == 0:
                await asyncio.sleep(0)
        await log.close()
        wakeups.append(log.stats()["writer_wakeups"])

    asyncio.run(run())


def paced_cpu(
    evs: list[AuditEvent],
    directory: Path | None,
    key_path: Path,
    rate: float,
    seconds: float,
    flush_ms: float,
) -> tuple[float, float]:
    """(CPU seconds, writer flushes) of appending at `rate` for `seconds` on a 2 ms
    tick; directory None appends to nothing (the baseline)."""

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    async def run() -> tuple[float, float]:
        log = None
        if directory is not None:
            log = AuditLog(
                AuditConfig(
                    dir=str(directory), signing_key=str(key_path), flush_interval_ms=flush_ms
                )
            )
            await log.start()
        append = log.append if log is not None else (lambda e: None)
        loop = asyncio.get_running_loop()
        total = min(len(evs), int(rate * seconds))
        began, i, c0 = loop.time(), 0, cpu()
        while i < total:
            due = min(total, int((loop.time() - began) * rate))
            while i < due:
                append(evs[i])
                i += 1
            await asyncio.sleep(0.002)
        if log is None:
            return cpu() - c0, 0.0
        await log.close()  # writes the rest: part of the cost
        return cpu() - c0, log.stats()["writer_flushes"]

    return asyncio.run(run())


def baseline_verify(directory: Path) -> None:
    for path in sorted(directory.glob("w*-0*.jsonl")):
        for line in path.read_bytes().split(b"\n")[:-1]:
            hashlib.sha256(line).digest()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--fsync", choices=("checkpoint", "always", "never"), default="checkpoint")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin to (-1: no pinning)")
    parser.add_argument("--rate", type=float, default=1200.0, help="paced rows: records/s")
    parser.add_argument("--paced-seconds", type=float, default=3.0)
    args = parser.parse_args()
    everywhere = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else {0}
    pinned_to = {args.cpu} if args.cpu >= 0 and hasattr(os, "sched_setaffinity") else None
    if pinned_to is not None:
        os.sched_setaffinity(0, pinned_to)
    n = min(args.records, 2_000_000)
    repeat = max(1, min(args.repeat, 10))
    evs = events(n)
    times: dict[str, list[float]] = {}
    wakeups: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        private, public = generate_keypair(root / "keys")
        key = load_public_key(public)
        fresh = iter(range(10 * repeat))

        def verify(workers: int | None) -> None:
            report = verify_directory(root / "chain", [key], workers=workers)
            assert report.valid, report.to_text()

        def unpinned(fn: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                if pinned_to is not None:
                    os.sched_setaffinity(0, everywhere)
                try:
                    fn()
                finally:
                    if pinned_to is not None:
                        os.sched_setaffinity(0, pinned_to)

            return run

        rows: list[tuple[str, Callable[[], object]]] = [
            ("baseline: json.dumps + write", lambda: baseline_append(evs, root / "plain.jsonl")),
            ("records: general path (canonical_json)", lambda: general_records(evs)),
            ("records: fast path (build_lines)", lambda: fast_records(evs)),
            (
                f"chain writer (fsync {args.fsync})",
                lambda: chain_append(evs, root / f"c{next(fresh)}", private, args.fsync),
            ),
            (
                f"AuditLog.append + writer thread (fsync {args.fsync})",
                lambda: audit_log_append(
                    evs, root / f"l{next(fresh)}", private, args.fsync, wakeups
                ),
            ),
        ]
        chain_append(evs, root / "chain", private, args.fsync)  # the log verify reads
        rows += [
            ("baseline: read + sha256 per line", lambda: baseline_verify(root / "chain")),
            ("verify, 1 process (chain, roots, signatures)", lambda: verify(1)),
            (f"verify, all {len(everywhere)} cores", unpinned(lambda: verify(None))),
        ]
        for _ in range(repeat):
            for name, fn in rows:
                start = time.perf_counter()
                fn()
                times.setdefault(name, []).append(time.perf_counter() - start)
            for leftover in root.glob("[cl][0-9]*"):  # keep the disk use bounded
                for f in leftover.iterdir():
                    f.unlink()
                leftover.rmdir()
    pinned = f"pinned to CPU {args.cpu}" if args.cpu >= 0 else "not pinned"
    print(f"{n} records per row, best and median of {repeat}, {pinned}")
    print(f"{'best/s':>10}  {'median/s':>10}  what")
    for name, seconds in times.items():
        print(f"{n / min(seconds):>10,.0f}  {n / statistics.median(seconds):>10,.0f}  {name}")
    if wakeups:
        print(
            f"writer wake-ups per 1000 appended records: "
            f"{1000 * statistics.median(wakeups) / n:.2f}"
        )
    paced(args, evs, repeat)


def paced(args: argparse.Namespace, evs: list[AuditEvent], repeat: int) -> None:
    rate, seconds = args.rate, min(args.paced_seconds, 30.0)
    n = min(len(evs), int(rate * seconds))
    flushes = (5.0, 20.0, 50.0, 100.0)
    cost: dict[float, list[float]] = {f: [] for f in flushes}
    writes: dict[float, list[float]] = {f: [] for f in flushes}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        private, _ = generate_keypair(root / "keys")
        for r in range(repeat):
            for f in flushes:  # each beside a baseline taken just before it
                base, _ = paced_cpu(evs, None, private, rate, seconds, f)
                used, count = paced_cpu(evs, root / f"p{r}-{f}", private, rate, seconds, f)
                cost[f].append((used - base) / n * 1e6)
                writes[f].append(count / seconds)
    print(
        f"\npaced: {rate:,.0f} records/s for {seconds:.0f} s, median of {repeat}; CPU per "
        "record over the same paced loop appending to nothing"
    )
    print(f"{'flush ms':>9}  {'us/record':>9}  {'writes/s':>8}")
    for f in flushes:
        print(
            f"{f:>9.0f}  {statistics.median(cost[f]):>9.1f}  {statistics.median(writes[f]):>8.0f}"
        )


if __name__ == "__main__":
    main()
