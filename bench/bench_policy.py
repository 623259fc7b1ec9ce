"""Decision latency per engine, run by hand: `python bench/bench_policy.py [--n N]`.

Measures `decide()` through the real decider, as the pipeline calls it: each input is
built by the input stage and its audit digest taken first (`input_digest`, which
encodes the canonical JSON once; the cache key and the VM reuse it), then timed:

  vm miss        - embedded, compiled VM (regorus RVM), cache off
  interp miss    - embedded, interpreter only (regorus Engine), cache off
  v1 interp miss - the first shipped policy (tests/policy/reference) on the
                   interpreter: the "before" figure
  cache hit      - the same request again (new request id), cache on
  remote         - OPA Data API over loopback to the test suite's stand-in OPA
                   (aiohttp + regorus on 127.0.0.1; not a real OPA)

for the shipped policy on a mix of allowed and denied requests (the shared test
table, with realistic headers) and for a baseline policy (`decision := true`) in the
same run ("whole input": the engine given the whole input, as before the policy's
reads were scanned, policy/reads.py). Also: the per-request input preparation (both
digests: json twice, json once, orjson) and the VM's own parts. Bounded: N
samples per row (default 3000; remote N/4) and 20 s per row at most. Prints p50 / p99
/ mean in microseconds; compare rows of one run only (shared machines are noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
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
from ztproxy.policy.prepared import PreparedInput  # noqa: E402
from ztproxy.policy.reads import project  # noqa: E402
from ztproxy.stages.policy_input import input_digest  # noqa: E402

MAX_SECONDS = 20.0
PATH = "ztproxy/authz/decision"
HEADERS = {"content-type": ("application/json",), "user-agent": ("curl/8.5.0",),
           "accept": ("*/*",), "accept-encoding": ("gzip, deflate",),
           "content-length": ("17",), "x-b3-traceid": ("80f198ee56343ba864fe8b2a57d3eff7",)}


def _mix(n: int, same: bool) -> list[PreparedInput]:
    """n inputs cycling through the table (allowed and denied), prepared as the
    pipeline prepares them (audit digest first). `same`: one request, new ids."""
    rows = [TABLE[0][1]] if same else [kw for _, kw, *_ in TABLE]
    docs = [make_input(request_id=f"r{i}", headers=HEADERS, **rows[i % len(rows)])
            for i in range(n)]
    for doc in docs:
        input_digest(doc)
    return docs


async def _measure(decide: Callable[[str, Any], Awaitable[Any]], docs: list[Any]
                   ) -> list[float]:
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
    for name, fn in (("prepare input, 2 json encodings", before),
                     ("prepare input, 1 json encoding", one_pass),
                     ("prepare input, orjson (now)", fast)):
        samples = []
        for doc in plain:
            t = time.perf_counter()
            fn(doc)
            samples.append((time.perf_counter() - t) * 1e6)
        rows.append((name, samples))
    return rows


def _vm_parts(engine: EmbeddedEngine, n: int) -> list[tuple[str, list[float]]]:
    vms = engine._vms
    assert vms is not None
    vms.run("data.ztproxy.authz.decision", {})
    vm = vms._vms["data.ztproxy.authz.decision"]
    assert vm is not None
    doc = _mix(1, True)[0]
    paths = engine.input_paths
    assert paths is not None
    whole, cut = doc.json, PreparedInput(project(doc, paths), no_floats=True).json
    parts: dict[str, list[float]] = {f"vm set_input_json, whole ({len(whole)} B)": [],
                                     f"vm set_input_json, cut ({len(cut)} B)": [],
                                     "vm execute": []}
    names = list(parts)
    for _ in range(n):
        t0 = time.perf_counter()
        vm.set_input_json(whole)
        t1 = time.perf_counter()
        vm.set_input_json(cut)
        t2 = time.perf_counter()
        vm.execute()
        t3 = time.perf_counter()
        parts[names[0]].append((t1 - t0) * 1e6)
        parts[names[1]].append((t2 - t1) * 1e6)
        parts[names[2]].append((t3 - t2) * 1e6)
    return list(parts.items())


def _decider(root: Path, *, use_vm: bool, cache: bool, data: tuple[str, ...] = ()
             ) -> PolicyDecider:
    engine = EmbeddedEngine([str(root)], data, use_vm=use_vm, decision_paths=[PATH])
    return PolicyDecider(engine, cache=DecisionCache(1.0 if cache else 0, 10_000,
                                                     time.monotonic), breaker=None)


async def main(n: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    rows = _sync_rows(n)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        (base / "ztproxy").mkdir(parents=True)
        (base / "ztproxy" / "authz.rego").write_text(
            "package ztproxy.authz\nimport rego.v1\ndecision := true\n")
        shipped, ref = ROOT / "policies", ROOT / "tests" / "policy" / "reference"
        plan = [("vm miss (shipped, mix)", shipped, True, False, ()),
                ("vm miss (shipped, mix, whole input)", shipped, True, False, ()),
                ("interp miss (shipped, mix)", shipped, False, False, ()),
                ("v1 interp miss (before, mix)", ref, False, False, (str(shipped),)),
                ("cache hit (shipped)", shipped, True, True, ()),
                ("vm miss (baseline)", base, True, False, ()),
                ("cache hit (baseline)", base, True, True, ())]
        for label, root, use_vm, cache, data in plan:
            d = _decider(root, use_vm=use_vm, cache=cache, data=data)
            await d.start()
            if "whole input" in label:  # as before policy/reads.py: no cut-down input
                assert isinstance(d.engine, EmbeddedEngine)
                d.engine.input_paths = None
            slow = "interp" in label
            docs = _mix(max(n // 4, 1) if slow else n, same=cache)
            rows.append((label, await _measure(d.decide, docs)))
            if label == "vm miss (shipped, mix)":
                assert isinstance(d.engine, EmbeddedEngine)
                assert d.engine.served_by(PATH) == "rvm"
                rows.extend(_vm_parts(d.engine, n))
            await d.close()
        for label, root in (("remote stand-in (shipped)", shipped),
                            ("remote stand-in (baseline)", base)):
            server = StandInOpa([str(root)])
            await server.start()
            remote = build_decider(PolicyConfig(engine="opa", opa_url=server.url,
                                                cache_ttl_ms=0, timeout_ms=1000))
            await remote.start()
            rows.append((label, await _measure(remote.decide, _mix(max(n // 4, 1), False))))
            await remote.close()
            await server.close()
    print(f"{'row':38} {'n':>6} {'p50 us':>9} {'p99 us':>9} {'mean us':>9}")
    for name, samples in rows:
        s = sorted(samples)
        p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
        print(f"{name:38} {len(s):6d} {statistics.median(s):9.1f} {p99:9.1f} "
              f"{statistics.fmean(s):9.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    asyncio.run(main(min(parser.parse_args().n, 100_000)))
