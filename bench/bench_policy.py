"""Decision latency per engine, run by hand: `python bench/bench_policy.py [--n N]`.

Measures `decide()` through the real decider, as the pipeline calls it: each input is
built by the input stage and its audit digest taken first (`input_digest`, which
encodes the canonical JSON once; the engine gets that same text), then timed:

  interp miss (now)      - the serving path: regorus interpreter, JSON in and out, cache
                           off, on the shipped policy (the OPA-style rewrite)
  old VM execute         - regorus's compiled VM (Program/Rvm, as the removed vm.py
                           used it) on the old shipped policy (git 249e017):
                           set_input_json + execute only, the "before" engine cost
  interp eval (old pol.) - the interpreter on that same old policy, same calls
  interp eval (now)      - the interpreter on today's policy, same calls
  cache hit              - the same request again (new request id), cache on
  hit rate (table mix)   - the hit rate on a stream cycling through the shared table
                           with fresh request ids (whole-input key, less id/time)
  remote                 - OPA Data API over loopback to the test suite's stand-in OPA
                           (aiohttp + regorus on 127.0.0.1; not a real OPA)

Bounded: N samples per row (default 3000; remote N/4) and 20 s per row at most. Prints
p50 / p99 / mean in microseconds; compare rows of one run only (shared machines are
noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "policy"))

import structlog  # noqa: E402
from conftest import make_input  # noqa: E402
from policy_standin import StandInOpa  # noqa: E402
from policy_table import TABLE  # noqa: E402

from ztproxy.config.policy import PolicyConfig  # noqa: E402
from ztproxy.policy import PolicyDecider, build_decider  # noqa: E402
from ztproxy.policy.cache import DecisionCache  # noqa: E402
from ztproxy.policy.canonical import canonical_bytes, stable_view  # noqa: E402
from ztproxy.policy.embedded import EmbeddedEngine  # noqa: E402
from ztproxy.policy.loader import load  # noqa: E402
from ztproxy.policy.prepared import PreparedInput  # noqa: E402
from ztproxy.stages.policy_input import input_digest  # noqa: E402

MAX_SECONDS = 20.0
PATH = "ztproxy/authz/decision"
HEADERS = {
    "content-type": ("application/json",),
    "user-agent": ("curl/8.5.0",),
    "accept": ("*/*",),
    "accept-encoding": ("gzip, deflate",),
    "content-length": ("17",),
    "x-b3-traceid": ("80f198ee56343ba864fe8b2a57d3eff7",),
}


def _mix(n: int, same: bool) -> list[PreparedInput]:
    """n inputs cycling through the table (allowed and denied), prepared as the
    pipeline prepares them (audit digest first). `same`: one request, new ids."""
    rows = [TABLE[0][1]] if same else [kw for _, kw, *_ in TABLE]
    docs = [
        make_input(request_id=f"r{i}", headers=HEADERS, **rows[i % len(rows)]) for i in range(n)
    ]
    for doc in docs:
        input_digest(doc)
    return docs


async def _measure(decide: Callable[[str, Any], Awaitable[Any]], docs: list[Any]) -> list[float]:
    await decide(PATH, docs[0])  # warm
    out = []
    deadline = time.monotonic() + MAX_SECONDS
    for doc in docs:
        t = time.perf_counter()
        await decide(PATH, doc)
        out.append((time.perf_counter() - t) * 1e6)
        if time.monotonic() > deadline:
            break
    return out


def _sync_rows(n: int) -> list[tuple[str, list[float]]]:
    """Input preparation, now against before; timed per call like the decisions."""
    plain = [dict(make_input(request_id=f"r{i}", headers=HEADERS)) for i in range(n)]

    def before(doc: dict[str, Any]) -> None:  # input_digest + the old cache key
        hashlib.sha256(canonical_bytes(doc)).hexdigest()
        hashlib.sha256(canonical_bytes(stable_view(doc))).hexdigest()

    def one_pass(doc: dict[str, Any]) -> None:
        prepared = PreparedInput(doc)
        assert prepared.sha256 and prepared.stable_sha256

    def fast(doc: dict[str, Any]) -> None:
        prepared = PreparedInput(doc, no_floats=True)
        assert prepared.sha256 and prepared.stable_sha256

    rows = []
    for name, fn in (
        ("prepare input, 2 json encodings", before),
        ("prepare input, 1 json encoding", one_pass),
        ("prepare input, orjson (now)", fast),
    ):
        samples = []
        for doc in plain:
            t = time.perf_counter()
            fn(doc)
            samples.append((time.perf_counter() - t) * 1e6)
        rows.append((name, samples))
    return rows


def _old_policy(tmp: Path) -> Path | None:
    """The shipped policy as it was before (git 249e017), beside today's data."""
    try:
        text = subprocess.run(
            ["git", "-C", str(ROOT), "show", "249e017:policies/ztproxy/authz.rego"],
            capture_output=True,
            check=True,
            timeout=20,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    root = tmp / "old"
    shutil.copytree(ROOT / "policies", root)
    (root / "ztproxy" / "authz_test.rego").unlink()
    (root / "ztproxy" / "authz.rego").write_bytes(text)
    return root


def _old_vm_rows(root: Path, n: int) -> list[tuple[str, list[float]]]:
    """The removed VM path on the old policy: compile once, then per decision
    set_input_json + execute (what vm.py did on a VM-served decision)."""
    import json

    import regorus

    modules = [(str(p), p.read_text()) for p in sorted(root.rglob("*.rego"))]
    data = {
        "ztproxy": {
            "segmentation": json.loads(
                (root / "ztproxy" / "segmentation" / "data.json").read_text()
            )
        }
    }
    data_json = json.dumps(data)
    try:
        program = regorus.Program.compile_from_modules(
            data_json, modules, ["data.ztproxy.authz.decision"]
        )
    except Exception as exc:  # noqa: BLE001 - report, do not fail the bench
        print(f"old VM: not compiled ({type(exc).__name__})")
        return []
    vm = regorus.Rvm()
    vm.load_program(program)
    vm.set_data_json(data_json)
    engine = regorus.Engine()
    for path, text in modules:
        engine.add_policy(path, text)
    engine.add_data_json(data_json)
    docs = _mix(n, False)
    out: dict[str, list[float]] = {
        "old VM execute (old policy, mix)": [],
        "interp eval (old policy, mix)": [],
    }
    for doc in docs:
        t = time.perf_counter()
        vm.set_input_json(doc.json)
        vm.execute()
        t1 = time.perf_counter()
        engine.set_input_json(doc.json)
        engine.eval_rule_as_json("data.ztproxy.authz.decision")
        t2 = time.perf_counter()
        out["old VM execute (old policy, mix)"].append((t1 - t) * 1e6)
        out["interp eval (old policy, mix)"].append((t2 - t1) * 1e6)
    return list(out.items())


def _raw_interp_row(root: Path, n: int) -> list[tuple[str, list[float]]]:
    """Today's policy on the table mix, then split by answer: the policy decides an
    allow from `allow` alone and works out `deny` reasons only for a denied request."""
    engine = load([str(root)], decision_paths=[PATH]).engine
    out: list[float] = []
    split: dict[bool, list[float]] = {True: [], False: []}
    for doc in _mix(n, False):
        t = time.perf_counter()
        engine.set_input_json(doc.json)
        answer = engine.eval_rule_as_json("data.ztproxy.authz.decision")
        took = (time.perf_counter() - t) * 1e6
        out.append(took)
        split['"allowed": true' in answer].append(took)
    return [
        ("interp eval (now policy, mix)", out),
        ("interp eval (now policy, allowed)", split[True]),
        ("interp eval (now policy, denied)", split[False]),
    ]


def _decider(root: Path, *, cache: bool) -> PolicyDecider:
    engine = EmbeddedEngine([str(root)], decision_paths=[PATH])
    return PolicyDecider(
        engine, cache=DecisionCache(1.0 if cache else 0, 10_000, time.monotonic), breaker=None
    )


async def _hit_rate(root: Path, n: int) -> float:
    d = _decider(root, cache=True)
    await d.start()
    for doc in _mix(n, False):
        await d.decide(PATH, doc)
    stats = d.stats()
    await d.close()
    hits, misses = stats["policy_cache_hits"], stats["policy_cache_misses"]
    return hits / max(hits + misses, 1)


async def main(n: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    rows = _sync_rows(n)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        (base / "ztproxy").mkdir(parents=True)
        (base / "ztproxy" / "authz.rego").write_text(
            "package ztproxy.authz\nimport rego.v1\ndecision := true\n"
        )
        shipped = ROOT / "policies"
        old = _old_policy(Path(tmp))
        plan = [
            ("interp miss (now, mix)", shipped, False),
            ("cache hit (now)", shipped, True),
            ("interp miss (baseline)", base, False),
            ("cache hit (baseline)", base, True),
        ]
        for label, root, cache in plan:
            d = _decider(root, cache=cache)
            await d.start()
            rows.append((label, await _measure(d.decide, _mix(n, same=cache))))
            await d.close()
        rows.extend(_raw_interp_row(shipped, n))
        if old is not None:
            rows.extend(_old_vm_rows(old, n))
        rate = await _hit_rate(shipped, n)
        for label, root in (
            ("remote stand-in (shipped)", shipped),
            ("remote stand-in (baseline)", base),
        ):
            server = StandInOpa([str(root)])
            await server.start()
            remote = build_decider(
                PolicyConfig(engine="opa", opa_url=server.url, cache_ttl_ms=0, timeout_ms=1000)
            )
            await remote.start()
            rows.append((label, await _measure(remote.decide, _mix(max(n // 4, 1), False))))
            await remote.close()
            await server.close()
    print(f"cache hit rate, table mix with fresh request ids: {rate:.3f}")
    print(f"{'row':38} {'n':>6} {'p50 us':>9} {'p99 us':>9} {'mean us':>9}")
    for name, samples in rows:
        s = sorted(samples)
        p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
        print(
            f"{name:38} {len(s):6d} {statistics.median(s):9.1f} {p99:9.1f} "
            f"{statistics.fmean(s):9.1f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    asyncio.run(main(min(parser.parse_args().n, 100_000)))
