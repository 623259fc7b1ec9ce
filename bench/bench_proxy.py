"""The proxy benchmark: ztproxy's full pipeline against a bare aiohttp mTLS proxy.

One command starts, each in its own process: a plain-HTTP aiohttp upstream; the bare
proxy (bench/bare_proxy.py, the Python ceiling); ztproxy (`python -m ztproxy run`) with
the full pipeline - mTLS, user token, device token bound to the client certificate, the
embedded Rego engine over the shipped policies/, the signed audit log - in four variants
(ES256 / RS256 user tokens x decision and token caches on / off); and nginx with
`ssl_verify_client on` when an `nginx` binary is on PATH. The proxy under test runs on
CPU 0; the load generator (bench/loadgen.py) and the upstream run on CPU 1.

Sections: keep-alive closed loop at fixed concurrency; a new TLS connection per request
(full handshake); an open-loop run at half the bare proxy's maximum rate (p99 added
latency); with `--workers 1,2` a scaling section. Repeats are interleaved (bare, zt-...,
bare, ...) and medians reported; each ratio is the median of per-repeat ratios against
the bare proxy measured in the same repeat. Then one profile of the full pipeline
(py-spy, when installed).

    python bench/bench_proxy.py            # about 3 minutes
    python bench/bench_proxy.py --quick    # under 40 s
    python bench/bench_proxy.py --workers 1,2

Writes bench/results/proxy-<time>.json and prints a table. Loopback only; bounded in
requests and time; every process it starts is stopped by its own process group id.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# bench/ is a scripts folder, not a package: `python bench/bench_proxy.py` puts this
# directory first on sys.path, which is how the sibling modules below are found.
from proxy_measure import Bench, profile, run_sections, run_workers
from proxy_mix import build_plans
from proxy_procs import RESULTS
from proxy_report import (
    against_baseline,
    audit_check,
    machine,
    print_table,
    scaling,
    scrape,
    summarize,
    targets_check,
)
from proxy_stack import TARGETS, Stack, preflight


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="ztproxy vs a bare aiohttp mTLS proxy")
    p.add_argument("--quick", action="store_true", help="one repeat, short runs (< 40 s)")
    p.add_argument("--workers", default="1", help="comma list, e.g. 1,2: scaling section")
    p.add_argument("--repeats", type=int)
    p.add_argument("--duration", type=float, help="seconds measured per run")
    p.add_argument("--warmup", type=float)
    p.add_argument("--concurrency", type=int, default=16, help="keep-alive connections")
    p.add_argument("--handshake-conc", type=int, default=8)
    p.add_argument("--rate-conc", type=int, default=64, help="connection pool, rate mode")
    p.add_argument("--max-requests", type=int, default=200_000, help="per run")
    p.add_argument("--distinct", type=int, default=25, help="paths per request template")
    p.add_argument("--profile", dest="profile", action="store_true", default=None)
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument(
        "--profile-baseline",
        action="store_true",
        help="with --baseline: profile zt-base too, for a side-by-side of where time goes",
    )
    p.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop of both proxies (auto: uvloop when installed, as `ztproxy run` does)",
    )
    p.add_argument("--out", type=Path, help="JSON result file")
    p.add_argument(
        "--baseline",
        type=Path,
        metavar="TREE",
        help="another checkout (e.g. `git worktree add /tmp/old <rev>`) run as "
        "target zt-base beside zt, same stack, same run: a before/after",
    )
    args = p.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.duration = args.duration or (1.5 if args.quick else 3.5)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 0.5)
    args.profile = (not args.quick) if args.profile is None else args.profile
    args.worker_counts = [int(x) for x in args.workers.split(",") if x.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        print("needs 2 CPUs (proxy on CPU 0, load generator on CPU 1)", file=sys.stderr)
        return 2
    started = time.monotonic()
    zt_targets = ["zt", "zt-nocache"] if args.quick else list(TARGETS)
    with tempfile.TemporaryDirectory(prefix="ztbench-") as tmp:
        stack = Stack(Path(tmp), with_rsa=any("rs256" in t for t in zt_targets))
        try:
            return _main(args, stack, zt_targets, started)
        finally:
            stack.close()


def _main(args: argparse.Namespace, stack: Stack, zt_targets: list[str], started: float) -> int:
    plans = {
        alg: build_plans(stack.pki, stack.rsa, alg, args.distinct)
        for alg in {TARGETS[t][0] for t in zt_targets}
    }
    if args.loop != "auto":
        stack.loop = args.loop
    stack.loop_note = preflight(stack, plans["ES256"])
    stack.start_bare()
    for name in zt_targets:
        if name not in stack.procs:
            alg, caches = TARGETS[name]
            stack.start_zt(name, alg, caches)
    ceilings = ["nginx"] if stack.start_nginx() else []
    if not ceilings:
        print("nginx not on PATH: native ceiling skipped", flush=True)
    if args.baseline is not None:
        stack.start_zt("zt-base", *TARGETS["zt"], tree=args.baseline.resolve())
        zt_targets.insert(1, "zt-base")
    stack.wait_all()
    print(f"event loop of both proxies: {stack.loop} {stack.loop_note or ''}", flush=True)
    b = Bench(stack, args, plans)
    rate = run_sections(b, zt_targets, ceilings)
    if args.worker_counts != [1]:
        run_workers(b, args.worker_counts)
    hot = profile(b, "zt", 8.0 if not args.quick else 4.0) if args.profile else None
    hot_base = (
        profile(b, "zt-base", 8.0 if not args.quick else 4.0)
        if args.profile and args.profile_baseline and args.baseline is not None
        else None
    )
    metrics = {name: scrape(stack.procs[name]) for name in zt_targets}
    audits: dict[str, Any] = {}
    for name in list(stack.procs):
        proc = stack.procs[name]
        code = stack.stop(name)
        if name.startswith("zt"):
            audits[name] = {"exit": code, **audit_check(proc, stack.pki)}
    rows = summarize(b.runs)
    scaling(rows, b.runs)
    checks = targets_check(rows) + against_baseline(b.runs)
    print_table(rows, checks)
    print("\nztproxy counters (cache hits, audit records):")
    for name in zt_targets:
        print(
            f"  {name:<17} "
            + ", ".join(
                f"{k.replace('ztproxy_', '')}={v:.0f}" for k, v in sorted(metrics[name].items())
            )
        )
        print(f"  {'':<17} audit: {audits.get(name)}")
    for name, prof in (("zt", hot), ("zt-base", hot_base)):
        if not prof:
            continue
        print(
            f"\nprofile of {name} (py-spy, {prof['samples']} samples); threads: "
            + ", ".join(f"{t} {p}%" for t, p in prof["threads"])
        )
        print("top self time (innermost ztproxy caller):")
        for frame, pct, caller in prof["self"][:15]:
            print(f"  {pct:5.1f}%  {frame:<55} <- {caller}")
        print("top ztproxy functions (inclusive):")
        for frame, pct in prof["inclusive_ztproxy"][:25]:
            print(f"  {pct:5.1f}%  {frame}")
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": machine(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "event_loop": stack.loop,
        "event_loop_note": stack.loop_note,
        "rate_half_bare": rate,
        "summary": rows,
        "targets": checks,
        "runs": b.runs,
        "metrics": metrics,
        "audit": audits,
        "profile": hot,
        "profile_baseline": hot_base,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    out = args.out or RESULTS / f"proxy-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {out} ({result['wall_seconds']} s)")
    bad = sum(r["mismatches"] + r["errors"] for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
