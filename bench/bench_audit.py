"""Audit log throughput on one core: appending (the writer path, fsync at checkpoints)
and offline verification, each beside a baseline measured in the same run.

    /work/venv/bin/python bench/bench_audit.py [--records 200000] [--fsync checkpoint]

Targets (issue 7): append >= 50,000 records/s, verify >= 200,000 records/s.
Bounded: at most --records records per row, in a temporary directory removed after.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ztproxy.audit import AuditLog
from ztproxy.audit.chain import ChainWriter
from ztproxy.audit.keys import generate_keypair, load_public_key, load_signing_key
from ztproxy.audit.verify import verify_directory
from ztproxy.config.audit import AuditConfig
from ztproxy.model import AuditEvent


def events(n: int) -> list[AuditEvent]:
    return [AuditEvent(
        kind="request", time="2026-11-28T01:02:03.456Z", request_id=f"{i:024x}",
        source_address="10.1.2.3", reason="allowed" if i % 5 else "policy_denied",
        decision="allow" if i % 5 else "deny", status=200 if i % 5 else 403,
        latency_us=1000 + i % 977, source_spiffe_id="spiffe://corp.example/ns/prod/sa/checkout",
        source_cert_sha256="ab" * 32, user_issuer="https://idp.corp.example",
        user_subject="alice@corp.example", device_id="dev-1234", method="GET",
        host="payments.internal", path=f"/api/v1/charges/{i}", destination_service="payments",
        route="payments-api", policy_revision="rev-42", policy_input_sha256="cd" * 32,
        policy_reasons=("ok",)) for i in range(n)]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def baseline_append(evs: list[AuditEvent], path: Path) -> None:
    with path.open("wb") as fh:
        for i in range(0, len(evs), 256):
            fh.write(b"".join(json.dumps(e.to_dict()).encode() + b"\n"
                              for e in evs[i:i + 256]))
        fh.flush()
        os.fsync(fh.fileno())


def chain_append(evs: list[AuditEvent], directory: Path, key_path: Path, fsync: str) -> None:
    chain = ChainWriter(directory, 0, "bench", load_signing_key(key_path), fsync=fsync,
                        clock=time.time)
    chain.open()
    for i in range(0, len(evs), 250):
        chain.write(evs[i:i + 250])
        if (i + 250) % 1000 == 0:
            chain.checkpoint()
    chain.close()


def audit_log_append(evs: list[AuditEvent], directory: Path, key_path: Path,
                     fsync: str) -> None:
    async def run() -> None:
        log = AuditLog(AuditConfig(dir=str(directory), signing_key=str(key_path),
                                   fsync=fsync, queue_size=len(evs) + 1))  # type: ignore[arg-type]
        await log.start()
        for i, e in enumerate(evs):
            log.append(e)
            if i % 1000 == 0:
                await asyncio.sleep(0)
        await log.close()
    asyncio.run(run())


def baseline_verify(directory: Path) -> None:
    for path in sorted(directory.glob("w*-0*.jsonl")):
        for line in path.read_bytes().split(b"\n")[:-1]:
            hashlib.sha256(line).digest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--fsync", choices=("checkpoint", "always", "never"),
                        default="checkpoint")
    args = parser.parse_args()
    n = min(args.records, 2_000_000)
    evs = events(n)
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        private, public = generate_keypair(root / "keys")
        rows.append(("baseline: json.dumps + write", timed(
            lambda: baseline_append(evs, root / "plain.jsonl"))))
        rows.append((f"chain writer (fsync {args.fsync})", timed(
            lambda: chain_append(evs, root / "chain", private, args.fsync))))
        rows.append((f"AuditLog.append + writer thread (fsync {args.fsync})", timed(
            lambda: audit_log_append(evs, root / "log", private, args.fsync))))
        rows.append(("baseline: read + sha256 per line", timed(
            lambda: baseline_verify(root / "chain"))))
        key = load_public_key(public)
        report = None

        def verify() -> None:
            nonlocal report
            report = verify_directory(root / "chain", [key])
        rows.append(("verify (chain, roots, signatures)", timed(verify)))
        assert report is not None and report.valid, report
    print(f"{'records':>9}  {'seconds':>8}  {'records/s':>10}  what")
    for name, seconds in rows:
        print(f"{n:>9}  {seconds:>8.3f}  {n / seconds:>10,.0f}  {name}")


if __name__ == "__main__":
    main()
