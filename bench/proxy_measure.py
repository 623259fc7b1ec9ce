"""The proxy benchmark's measurements: one run of bench/loadgen.py against one target
(`Bench.measure`), the sections built from them (keep-alive, new TLS connection per
request, fixed rate, workers scaling; repeats interleaved ABBA), and the py-spy profile
of the full pipeline with its hot spots.

Part of bench/bench_proxy.py (run that). Takes a running `Stack` and the request plans;
returns per-run result dicts (`Bench.runs`). Every run is bounded in requests and time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy_procs import BENCH, LOAD_CPU, PY, REPO, RESULTS
from proxy_stack import Stack


# == one measurement ======================================================================
@dataclass
class Bench:
    stack: Stack
    args: argparse.Namespace
    plans: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]]
    runs: list[dict[str, Any]] = field(default_factory=list)

    def measure(
        self,
        section: str,
        target: str,
        rep: int,
        *,
        mode: str = "keepalive",
        rate: float = 0.0,
        concurrency: int | None = None,
        duration: float | None = None,
        record: bool = True,
        proc_name: str | None = None,
    ) -> dict[str, Any]:
        a = self.args
        proc = self.stack.procs.get(proc_name or target)
        if target == "direct":  # the upstream itself, plain HTTP: the floor
            port, tls, pids = self.stack.upstream.port, False, []
        else:
            assert proc is not None
            port, tls, pids = proc.port, True, proc.pids()
        alg = proc.extra.get("alg", "ES256") if proc else "ES256"
        plans, identities = self.plans[alg]
        if not target.startswith("zt"):  # everything passes: the upstream says 200
            plans = [
                {
                    "identity": p["identity"],
                    "requests": [{"raw": r["raw"], "expect": 200} for r in p["requests"]],
                }
                for p in plans
            ]
        spec = {
            "target": {
                "host": "127.0.0.1",
                "port": port,
                "tls": tls,
                "ca": str(self.stack.pki.ca_cert),
                "identities": identities,
            },
            "plans": plans,
            "mode": mode,
            "rate": rate,
            "cpu": [LOAD_CPU],
            "cpu_pids": pids,
            "concurrency": concurrency or a.concurrency,
            "max_requests": a.max_requests,
            "duration": duration or a.duration,
            "warmup": a.warmup,
            "seed": rep,
        }
        spec_path = self.stack.root / "spec.json"
        out_path = self.stack.root / "out.json"
        spec_path.write_text(json.dumps(spec))
        out_path.unlink(missing_ok=True)
        up0 = cpu_ns([self.stack.upstream.popen.pid])
        subprocess.run(
            [PY, str(BENCH / "loadgen.py"), str(spec_path), str(out_path)],
            check=True,
            timeout=spec["warmup"] + spec["duration"] + 60,
        )
        result: dict[str, Any] = json.loads(out_path.read_text())
        n = result["requests"] or 1
        result["upstream_cpu_us_per_req"] = round(
            (cpu_ns([self.stack.upstream.popen.pid]) - up0) / 1000 / n, 1
        )
        result.update(
            section=section,
            target=target,
            rep=rep,
            concurrency=spec["concurrency"],
            workers=proc.extra.get("workers", 1) if proc else 1,
        )
        if record:
            self.runs.append(result)
        print(
            f"  {section:<10} {target:<18} rep {rep}  {result['rps']:>8.0f} req/s  "
            f"p50 {result['p50_us']:>7.0f} us  p99 {result['p99_us']:>7.0f} us  "
            f"cpu {result['cpu_us_per_req'] or 0:>6.0f} us/req  "
            f"{_statuses(result)}",
            flush=True,
        )
        return result


def cpu_ns(pids: list[int]) -> int:
    sys.path.insert(0, str(BENCH))
    from loadgen import cpu_snapshot

    return cpu_snapshot(pids)[1]


def _statuses(r: dict[str, Any]) -> str:
    parts = [f"{k}:{v}" for k, v in r["statuses"].items()]
    if r["errors"]:
        parts.append(f"errors:{sum(r['errors'].values())}")
    if r["mismatches"]:
        parts.append(f"MISMATCH:{r['mismatches']}")
    return " ".join(parts)


# == sections =============================================================================
def abba(rep: int, items: list[str]) -> list[str]:
    """Run order for one repeat: forwards on even repeats, backwards on odd ones, so a
    slow drift of the shared machine does not favour whoever runs first."""
    return items if rep % 2 == 0 else items[::-1]


def run_sections(b: Bench, zt_targets: list[str], extra_ceilings: list[str]) -> float:
    a = b.args
    everyone = ["bare", *zt_targets, *extra_ceilings]
    print("warm-up (not recorded)", flush=True)
    for t in everyone:
        b.measure("warmup", t, 0, duration=0.6 if a.quick else 1.0, record=False)
    print("keep-alive, closed loop", flush=True)
    for rep in range(a.repeats):
        for t in abba(rep, everyone):
            b.measure("keepalive", t, rep)
    bare_max = statistics.median(
        r["rps"] for r in b.runs if r["section"] == "keepalive" and r["target"] == "bare"
    )
    print("new TLS connection per request (full handshake)", flush=True)
    for rep in range(a.repeats):
        for t in abba(rep, ["bare", "zt", *extra_ceilings]):
            b.measure(
                "handshake",
                t,
                rep,
                mode="handshake",
                concurrency=a.handshake_conc,
                duration=a.duration * 0.75,
            )
    rate = round(bare_max / 2)
    print(f"fixed rate {rate} req/s (half the bare proxy's maximum)", flush=True)
    for rep in range(a.repeats):
        for t in abba(rep, ["direct", "bare", "zt", *extra_ceilings]):
            b.measure("rate", t, rep, mode="rate", rate=rate, concurrency=a.rate_conc)
    return float(rate)


def run_workers(b: Bench, counts: list[int]) -> None:
    """Scaling: N=1 on CPU 0; N>1 on every CPU, sharing them with the load generator and
    the upstream (two cores: what this machine can honestly show)."""
    print(f"workers {counts} (N>1: proxy on all CPUs, load generator shares CPU 1)", flush=True)
    names: list[tuple[str, str]] = []
    for n in counts:
        if n == 1:
            names += [("bare", "bare"), ("zt", "zt")]
            continue
        cpus = set(range(os.cpu_count() or 1))
        b.stack.start_bare(f"bare-w{n}", workers=n, cpus=cpus)
        b.stack.start_zt(f"zt-w{n}", "ES256", True, workers=n, cpus=cpus)
        names += [(f"bare-w{n}", f"bare-w{n}"), (f"zt-w{n}", f"zt-w{n}")]
    b.stack.wait_all()
    for _, proc_name in names:
        b.measure("warmup", proc_name, 0, duration=1.0, record=False)
    for rep in range(b.args.repeats):
        for label, proc_name in names if rep % 2 == 0 else names[::-1]:
            b.measure("workers", label, rep, proc_name=proc_name)


# == profile ==============================================================================
def profile(b: Bench, target: str, seconds: float) -> dict[str, Any] | None:
    spy = shutil.which("py-spy") or str(Path(PY).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy not installed: no profile (pip install py-spy)", flush=True)
        return None
    proc = b.stack.procs[target]
    out = b.stack.root / f"profile-{target}.txt"
    print(f"profiling {target} with py-spy for {seconds:.0f} s", flush=True)
    spy_proc = subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(proc.popen.pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "200",
            "--format",
            "raw",
            "--threads",
            "--nonblocking",
            "--subprocesses",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: os.sched_setaffinity(0, {LOAD_CPU}),
    )
    time.sleep(0.5)
    b.measure("profile", target, 0, duration=seconds - 1.0, record=False)
    try:
        _, err = spy_proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        spy_proc.kill()
        spy_proc.communicate()
        return None
    if not out.exists():
        print(f"py-spy failed: {err.decode(errors='replace')[-300:]}", flush=True)
        return None
    RESULTS.mkdir(exist_ok=True)
    shutil.copy(out, RESULTS / out.name)
    return hot_spots(out.read_text())


def _frame(frame: str) -> str:
    """'handle (ztproxy/pipeline.py:120)' -> 'ztproxy/pipeline.py:handle'."""
    name, _, where = frame.rpartition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3.11/", str(REPO) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{name}"


def hot_spots(raw: str, top: int = 20) -> dict[str, Any]:
    """Self and inclusive time per function from py-spy's collapsed stacks (with
    --threads the first frame names the thread). Each self-time entry also names the
    innermost ztproxy function on its stacks: the place to fix."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    callers: dict[str, Counter[str]] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        parts = stack.split(";")
        thread = parts[0] if parts and parts[0].startswith(("thread", "process")) else "?"
        threads[thread.split(": ", 1)[-1]] += n
        frames = [
            _frame(f)
            for f in parts
            if f.rstrip().endswith(")") and " (" in f and not f.startswith(("thread", "process"))
        ]
        if not frames:
            continue
        leaf = frames[-1]
        own[leaf] += n
        zt = next((f for f in reversed(frames) if f.startswith("ztproxy/")), "-")
        callers.setdefault(leaf, Counter())[zt] += n
        for f in set(frames):
            incl[f] += n

    def pct(c: int) -> float:
        return round(100.0 * c / total, 1) if total else 0.0

    return {
        "samples": total,
        "threads": [(t, pct(c)) for t, c in threads.most_common()],
        "self": [(f, pct(c), callers[f].most_common(1)[0][0]) for f, c in own.most_common(top)],
        "inclusive_ztproxy": [
            (f, pct(c)) for f, c in incl.most_common() if f.startswith("ztproxy/")
        ][:top],
        "inclusive_all": [(f, pct(c)) for f, c in incl.most_common(top)],
    }
