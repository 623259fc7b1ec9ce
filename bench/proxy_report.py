"""The proxy benchmark's results: per-section medians and ratios against the bare proxy in
the same repeat, the pass/miss of the targets, the printed table, ztproxy's counters
(scraped from /metrics), the audit log check after a clean stop, and the machine.

Part of bench/bench_proxy.py (run that). Takes the runs of `proxy_measure.Bench` and
stopped or running processes; returns plain dicts and rows for the JSON result file.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxy_procs import PY, REPO, Proc

# == results ==============================================================================
METRICS = (
    "ztproxy_decision_cache_total",
    "ztproxy_token_cache_total",
    "ztproxy_audit_records_total",
    "ztproxy_policy_decisions_total",
)


def scrape(proc: Proc) -> dict[str, float]:
    if proc.admin_port is None:
        return {}
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{proc.admin_port}/metrics", timeout=5
        ) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(METRICS):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def audit_check(proc: Proc, pki: Any) -> dict[str, Any]:
    """Records on disk after a clean stop, and `ztproxy audit verify` when it exists."""
    audit_dir: Path = proc.extra["audit_dir"]
    records = sum(
        sum(1 for line in f.open("rb") if line.strip()) for f in audit_dir.rglob("*.jsonl")
    )
    out: dict[str, Any] = {"records": records}
    pub = next((p for p in sorted(pki.audit_dir.iterdir()) if "pub" in p.name), None)
    if pub is not None:
        cp = subprocess.run(
            [PY, "-m", "ztproxy", "audit", "verify", str(audit_dir), "--key", str(pub)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=str(REPO),
        )
        out["verify_exit"] = cp.returncode
        out["verify_tail"] = (cp.stdout + cp.stderr).strip().splitlines()[-3:]
    return out


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None and r[key] == r[key]]
    return round(statistics.median(vals), 1) if vals else None


def med(values: Any, digits: int = 3) -> float | None:
    vals = [v for v in values if v == v]  # drop NaN (a run without answers)
    return round(statistics.median(vals), digits) if vals else None


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    keys = list(dict.fromkeys((r["section"], r["target"]) for r in runs))
    for section, target in keys:
        mine = [r for r in runs if (r["section"], r["target"]) == (section, target)]
        row: dict[str, Any] = {"section": section, "target": target, "repeats": len(mine)}
        for k in (
            "rps",
            "p50_us",
            "p99_us",
            "cpu_us_per_req",
            "cpu_sched_us_per_req",
            "cpu_util",
            "loadgen_cpu_us_per_req",
            "upstream_cpu_us_per_req",
        ):
            row[k] = median_of(mine, k)
        statuses: Counter[str] = Counter()
        for r in mine:
            statuses.update(r["statuses"])
        row["statuses"] = dict(statuses)
        row["errors"] = sum(sum(r["errors"].values()) for r in mine)
        row["mismatches"] = sum(r["mismatches"] for r in mine)
        base = (
            "bare"
            if section != "workers"
            else ("bare" + target[2:] if target.startswith("zt") else target)
        )
        pairs = [
            (r, x)
            for r in mine
            for x in runs
            if x["section"] == section
            and x["rep"] == r["rep"]
            and x["target"] == base
            and x is not r
        ]
        if pairs:
            row["x_rps"] = med(r["rps"] / x["rps"] for r, x in pairs if x["rps"])
            row["x_cpu"] = med(
                r["cpu_us_per_req"] / x["cpu_us_per_req"]
                for r, x in pairs
                if r["cpu_us_per_req"] and x["cpu_us_per_req"]
            )
            row["x_cpu_sched"] = med(
                r["cpu_sched_us_per_req"] / x["cpu_sched_us_per_req"]
                for r, x in pairs
                if r["cpu_sched_us_per_req"] and x["cpu_sched_us_per_req"]
            )
            row["added_p50_us"] = med(
                (r["p50_us"] - x["p50_us"] for r, x in pairs if r["requests"] and x["requests"]), 1
            )
            row["added_p99_us"] = med(
                (r["p99_us"] - x["p99_us"] for r, x in pairs if r["requests"] and x["requests"]), 1
            )
        rows.append(row)
    return rows


def targets_check(rows: list[dict[str, Any]]) -> list[tuple[str, str, bool | None]]:
    get = {(r["section"], r["target"]): r for r in rows}
    ka, rate = get.get(("keepalive", "zt"), {}), get.get(("rate", "zt"), {})
    checks: list[tuple[str, str, bool | None]] = []
    limits: tuple[tuple[str, Any, Callable[[float], bool]], ...] = (
        ("throughput >= 0.8x bare", ka.get("x_rps"), lambda v: v >= 0.8),
        ("CPU/request <= 1.25x bare", ka.get("x_cpu"), lambda v: v <= 1.25),
        (
            "p99 added <= 1000 us at half bare max (vs bare)",
            rate.get("added_p99_us"),
            lambda v: v <= 1000,
        ),
    )
    for label, value, ok in limits:
        checks.append((label, str(value), None if value is None else bool(ok(value))))
    return checks


def against_baseline(runs: list[dict[str, Any]]) -> list[tuple[str, str, bool | None]]:
    """`--baseline`: zt against zt-base (the other checkout) in the same repeat of the
    keep-alive section: the cost of a change, measured side by side in one run."""
    ka = [r for r in runs if r["section"] == "keepalive"]
    pairs = [
        (r, x)
        for r in ka
        if r["target"] == "zt"
        for x in ka
        if x["target"] == "zt-base" and x["rep"] == r["rep"]
    ]
    if not pairs:
        return []
    cpu = med(
        r["cpu_us_per_req"] / x["cpu_us_per_req"]
        for r, x in pairs
        if r["cpu_us_per_req"] and x["cpu_us_per_req"]
    )
    rps = med(r["rps"] / x["rps"] for r, x in pairs if x["rps"])
    return [
        (
            "CPU/request zt vs zt-base <= 1.15x",
            f"{cpu} (per repeat: "
            + ", ".join(
                f"{r['cpu_us_per_req']:.0f}/{x['cpu_us_per_req']:.0f} us"
                for r, x in pairs
                if r["cpu_us_per_req"] and x["cpu_us_per_req"]
            )
            + ")",
            None if cpu is None else cpu <= 1.15,
        ),
        ("req/s zt vs zt-base", str(rps), None),
    ]


def fmt(value: Any, spec: str) -> str:
    return format(value, spec) if value is not None else "-"


def print_table(rows: list[dict[str, Any]], checks: list[tuple[str, str, bool | None]]) -> None:
    head = (
        f"{'section':<10} {'target':<17} {'req/s':>8} {'p50 us':>8} {'p99 us':>8} "
        f"{'cpu us/req':>10} {'x req/s':>8} {'x cpu':>6} {'+p99 us':>8}  statuses"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        st = " ".join(f"{k}:{v}" for k, v in sorted(r["statuses"].items()))
        if r["errors"]:
            st += f" errors:{r['errors']}"
        if r["mismatches"]:
            st += f" MISMATCH:{r['mismatches']}"
        print(
            f"{r['section']:<10} {r['target']:<17} {fmt(r['rps'], '8.0f')} "
            f"{fmt(r['p50_us'], '8.0f')} {fmt(r['p99_us'], '8.0f')} "
            f"{fmt(r['cpu_us_per_req'], '10.0f')} {fmt(r.get('x_rps'), '8.2f')} "
            f"{fmt(r.get('x_cpu'), '6.2f')} {fmt(r.get('added_p99_us'), '8.0f')}  {st}"
        )
    print("\ntargets (ztproxy ES256, caches on, vs the bare aiohttp proxy):")
    for label, value, ok in checks:
        verdict = "n/a" if ok is None else ("PASS" if ok else "MISS")
        print(f"  {verdict:<5} {label}: {value}")


def machine() -> dict[str, Any]:
    import aiohttp

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    try:
        import uvloop

        loop = f"uvloop {getattr(uvloop, '__version__', '?')}"
    except ImportError:
        loop = "asyncio"
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "event_loop": loop,
        "nginx": shutil.which("nginx"),
    }


def scaling(rows: list[dict[str, Any]], runs: list[dict[str, Any]]) -> None:
    """In the workers section: each target's req/s and CPU/request against its 1-worker
    self in the same repeat."""
    for row in rows:
        if row["section"] != "workers" or "-w" not in row["target"]:
            continue
        kind = row["target"].split("-w")[0]
        mine = [r for r in runs if r["section"] == "workers" and r["target"] == row["target"]]
        pairs = [
            (r, x)
            for r in mine
            for x in runs
            if x["section"] == "workers" and x["target"] == kind and x["rep"] == r["rep"]
        ]
        if pairs:
            row["scale_rps_vs_w1"] = med(r["rps"] / x["rps"] for r, x in pairs if x["rps"])
            row["scale_cpu_vs_w1"] = med(
                r["cpu_us_per_req"] / x["cpu_us_per_req"]
                for r, x in pairs
                if r["cpu_us_per_req"] and x["cpu_us_per_req"]
            )
