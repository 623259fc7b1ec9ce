"""The one load generator of the proxy benchmark (bench/bench_proxy.py runs it).

Takes a JSON spec (target, client identities, request plans, mode, bounds) and writes a
JSON result: completed requests, req/s, latency percentiles, status counts, mismatches
against the expected statuses, and the CPU time the target processes spent meanwhile
(read from /proc/PID/stat, utime+stime, and /proc/PID/task/*/schedstat, at the start
and end of the measured window).

Raw asyncio streams over TLS, pre-serialized requests: less client overhead than an
HTTP client library, so more of the core it is pinned to is left for the upstream.
Every connection presents the client certificate of its plan's workload. Modes:

- `keepalive`: closed loop, `concurrency` connections, each sends its next request as
  soon as the previous answer is read;
- `handshake`: the same, but a new TLS connection (full handshake) for every request;
- `rate`: open loop at a fixed rate; latency counts from the scheduled send time, so
  queueing behind a slow answer is measured (no coordinated omission).

Bounded: stops at `max_requests` measured requests or `duration` seconds, whichever
comes first; a hard deadline cancels anything still hanging. Trusts the spec (it is
written by the benchmark); talks to 127.0.0.1 only.

    python bench/loadgen.py SPEC.json OUT.json
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import ssl
import sys
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
READ_LIMIT = 1 << 20


# -- CPU accounting of the target ---------------------------------------------------------
def proc_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        stat = fh.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def proc_sched_ns(pid: int) -> int:
    """Nanoseconds on CPU over all threads (schedstat: finer than the tick count)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat", "rb") as fh:
                total += int(fh.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def cpu_snapshot(pids: list[int]) -> tuple[int, int]:
    ticks = ns = 0
    for pid in pids:
        try:
            ticks += proc_ticks(pid)
            ns += proc_sched_ns(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return ticks, ns


# -- the wire ------------------------------------------------------------------------------
@dataclass(slots=True)
class Req:
    raw: bytes
    expect: int  # the status the target should answer (0: any)


@dataclass(slots=True)
class Stats:
    measuring: bool = False
    latencies: array[int] = field(default_factory=lambda: array("q"))
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    mismatches: int = 0
    bytes_in: int = 0
    connects: int = 0  # TLS connections opened while measuring (keep-alive: ~0)
    backlog: int = 0  # rate mode: requests scheduled but never sent (the target fell behind)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool, int]:
    """(status, server wants close, body bytes). Handles Content-Length and chunked."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length: int | None = None
    chunked = close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value)
        elif lname == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif lname == b"connection" and b"close" in value.lower():
            close = True
    size = 0
    if chunked:
        while True:
            line = await reader.readuntil(b"\r\n")
            n = int(line.split(b";", 1)[0], 16)
            await reader.readexactly(n + 2)
            size += n
            if n == 0:
                break
    elif length is not None:
        if length:
            await reader.readexactly(length)
        size = length
    else:  # no framing: the body runs to the end of the connection
        size = len(await reader.read(READ_LIMIT))
        close = True
    return status, close, size


class Target:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.host: str = spec["host"]
        self.port: int = spec["port"]
        self.server_hostname: str = spec.get("server_hostname", "localhost")
        self.tls: bool = spec.get("tls", True)
        self.contexts: dict[str, ssl.SSLContext | None] = {}
        for name, ident in spec.get("identities", {}).items():
            if not self.tls:
                self.contexts[name] = None
                continue
            ctx = ssl.create_default_context(cafile=spec["ca"])
            ctx.load_cert_chain(ident["cert"], ident["key"])
            self.contexts[name] = ctx

    async def connect(self, identity: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        ctx = self.contexts[identity]
        return await asyncio.open_connection(
            self.host,
            self.port,
            ssl=ctx,
            server_hostname=self.server_hostname if ctx else None,
            limit=READ_LIMIT,
        )


async def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is None:
        return
    writer.close()
    try:
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    except (TimeoutError, OSError, ssl.SSLError):
        pass


class Connection:
    """One client slot: a workload identity, its request plan, at most one connection."""

    def __init__(
        self,
        target: Target,
        identity: str,
        plan: list[Req],
        start: int,
        stats: Stats,
        per_request: bool,
        timeout: float,
    ) -> None:
        self.target, self.identity, self.plan = target, identity, plan
        self.next = start % len(plan)
        self.stats, self.per_request, self.timeout = stats, per_request, timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def one(self, t_start: int) -> None:
        req = self.plan[self.next]
        self.next = (self.next + 1) % len(self.plan)
        try:
            async with asyncio.timeout(self.timeout):
                if self.writer is None:
                    self.reader, self.writer = await self.target.connect(self.identity)
                    if self.stats.measuring:
                        self.stats.connects += 1
                assert self.reader is not None
                self.writer.write(req.raw)
                status, close, size = await read_response(self.reader)
        except (
            OSError,
            ssl.SSLError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ValueError,
            IndexError,
        ) as exc:
            if self.stats.measuring:
                self.stats.errors[type(exc).__name__] += 1
            await self.drop()
            return
        if self.stats.measuring:
            self.stats.latencies.append(time.perf_counter_ns() - t_start)
            self.stats.statuses[status] += 1
            self.stats.bytes_in += size
            if req.expect and status != req.expect:
                self.stats.mismatches += 1
        if close or self.per_request:
            await self.drop()

    async def connect(self) -> None:
        try:
            self.reader, self.writer = await self.target.connect(self.identity)
        except (OSError, ssl.SSLError):
            self.reader = self.writer = None  # the first request will try again

    async def drop(self) -> None:
        writer, self.reader, self.writer = self.writer, None, None
        await _close(writer)


# -- the run ------------------------------------------------------------------------------
async def run(spec: dict[str, Any]) -> dict[str, Any]:
    target = Target(spec["target"])
    mode: str = spec["mode"]
    concurrency: int = spec["concurrency"]
    max_requests: int = spec["max_requests"]
    duration: float = spec["duration"]
    warmup: float = spec.get("warmup", 0.5)
    rate: float = float(spec.get("rate", 0))
    cpu_pids: list[int] = spec.get("cpu_pids", [])
    plans = [
        (
            p["identity"],
            [Req(r["raw"].encode("latin-1"), r.get("expect", 0)) for r in p["requests"]],
        )
        for p in spec["plans"]
    ]
    rng = random.Random(spec.get("seed", 7))
    stats = Stats()
    conns = [
        Connection(
            target,
            plans[i % len(plans)][0],
            plans[i % len(plans)][1],
            rng.randrange(1 << 30),
            stats,
            mode == "handshake",
            spec.get("request_timeout", 10.0),
        )
        for i in range(concurrency)
    ]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    measured = [0]

    def count_and_check() -> None:
        if stats.measuring:
            measured[0] += 1
            if measured[0] >= max_requests:
                stop.set()

    async def closed_loop(conn: Connection) -> None:
        while not stop.is_set():
            await conn.one(time.perf_counter_ns())
            count_and_check()

    queue: asyncio.Queue[int] = asyncio.Queue()

    async def open_loop_worker(conn: Connection) -> None:
        while True:
            t_sched = await queue.get()
            if t_sched < 0 or stop.is_set():  # a backlog left at the end is not served
                return
            await conn.one(t_sched)
            count_and_check()

    async def producer() -> None:
        interval_ns = int(1e9 / rate)
        t_next = time.perf_counter_ns()
        while not stop.is_set():
            now = time.perf_counter_ns()
            if now < t_next:
                await asyncio.sleep((t_next - now) / 1e9)
                continue
            queue.put_nowait(t_next)  # latency counts from here, not from the send
            t_next += interval_ns
        stats.backlog = queue.qsize()
        for _ in conns:
            queue.put_nowait(-1)

    if mode != "handshake":  # handshakes first, so they do not eat the warm-up
        async with asyncio.timeout(spec.get("connect_timeout", 30.0)):
            await asyncio.gather(*(c.connect() for c in conns))
    hard_deadline = warmup + duration + spec.get("grace", 15.0)
    tasks: list[asyncio.Task[None]]
    if mode == "rate":
        tasks = [
            loop.create_task(open_loop_worker(c), name=f"conn{i}") for i, c in enumerate(conns)
        ]
        tasks.append(loop.create_task(producer(), name="producer"))
    else:
        tasks = [loop.create_task(closed_loop(c), name=f"conn{i}") for i, c in enumerate(conns)]
    await asyncio.sleep(warmup)
    cpu0 = cpu_snapshot(cpu_pids)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter_ns()
    stats.measuring = True
    try:
        await asyncio.wait_for(stop.wait(), duration)
    except TimeoutError:
        stop.set()
    _, pending = await asyncio.wait(tasks, timeout=hard_deadline)
    for task in pending:
        task.cancel()
    t1 = time.perf_counter_ns()
    cpu1 = cpu_snapshot(cpu_pids)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    stats.measuring = False
    for conn in conns:
        await conn.drop()
    return summarize(stats, t1 - t0, cpu0, cpu1, ru0, ru1, len(pending), mode, rate)


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[idx] / 1000.0  # microseconds


def summarize(
    stats: Stats,
    elapsed_ns: int,
    cpu0: tuple[int, int],
    cpu1: tuple[int, int],
    ru0: resource.struct_rusage,
    ru1: resource.struct_rusage,
    hung: int,
    mode: str,
    rate: float,
) -> dict[str, Any]:
    lat = sorted(stats.latencies)
    n = len(lat)
    elapsed = elapsed_ns / 1e9
    ticks = cpu1[0] - cpu0[0]
    sched_ns = cpu1[1] - cpu0[1]
    own = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "mode": mode,
        "rate_target": rate or None,
        "requests": n,
        "errors": dict(stats.errors),
        "hung": hung,
        "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
        "mismatches": stats.mismatches,
        "backlog": stats.backlog,
        "connects": stats.connects,
        "elapsed_s": round(elapsed, 4),
        "rps": round(n / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_us": round(percentile(lat, 0.50), 1),
        "p90_us": round(percentile(lat, 0.90), 1),
        "p99_us": round(percentile(lat, 0.99), 1),
        "max_us": round(lat[-1] / 1000.0, 1) if lat else None,
        "cpu_ticks": ticks,
        "cpu_us_per_req": round(ticks * 1e6 / CLK_TCK / n, 1) if n else None,
        "cpu_sched_us_per_req": round(sched_ns / 1000 / n, 1) if n else None,
        "cpu_util": round(sched_ns / elapsed_ns, 3) if elapsed_ns else None,
        "loadgen_cpu_us_per_req": round(own * 1e6 / n, 1) if n else None,
        "bytes_in": stats.bytes_in,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: loadgen.py SPEC.json OUT.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[1]).read_text())
    if spec.get("cpu") is not None:
        os.sched_setaffinity(0, set(spec["cpu"]))
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(spec))
    else:
        result = uvloop.run(run(spec))
    Path(argv[2]).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
