"""Decision latency per engine, run by hand: `python bench/bench_policy.py [--n N]`.

Measures, through the real decider (`build_decider`), the shipped policy and a
baseline policy (`decision := true`) in the same run:
  embedded miss  - regorus in-process, cache off
  cache hit      - same input again (new request id), cache on
  remote         - OPA Data API over loopback to the test suite's stand-in OPA
                   (aiohttp + regorus on 127.0.0.1; not a real OPA)
Bounded: N decisions per row (default 2000; remote N/4) and 20 s per row at most.
Prints p50 / p99 / mean in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "policy"))

import structlog  # noqa: E402
from conftest import make_input  # noqa: E402
from policy_standin import StandInOpa  # noqa: E402

from ztproxy.config.policy import PolicyConfig  # noqa: E402
from ztproxy.policy import build_decider  # noqa: E402

MAX_SECONDS = 20.0


async def _measure(decider: object, path: str, n: int, fresh_ids: bool) -> list[float]:
    docs = [make_input(request_id=f"r{i}") for i in range(n)] if fresh_ids else \
        [make_input()] * n
    await decider.decide(path, docs[0])  # type: ignore[attr-defined]  # warm
    out = []
    deadline = time.monotonic() + MAX_SECONDS
    for doc in docs:
        t = time.perf_counter()
        await decider.decide(path, doc)  # type: ignore[attr-defined]
        out.append((time.perf_counter() - t) * 1e6)
        if time.monotonic() > deadline:
            break
    return out


async def main(n: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        (base / "ztproxy").mkdir(parents=True)
        (base / "ztproxy" / "authz.rego").write_text(
            "package ztproxy.authz\nimport rego.v1\ndecision := true\n")
        for label, root in (("shipped", ROOT / "policies"), ("baseline", base)):
            cfg = PolicyConfig(policy_dirs=(str(root),), watch=False)
            miss = build_decider(PolicyConfig(policy_dirs=(str(root),), watch=False,
                                              cache_ttl_ms=0))
            hit = build_decider(cfg)
            await miss.start()
            await hit.start()
            rows.append((f"embedded miss ({label})",
                         await _measure(miss, "ztproxy/authz/decision", n, False)))
            rows.append((f"cache hit ({label})",
                         await _measure(hit, "ztproxy/authz/decision", n, True)))
            await miss.close()
            await hit.close()
            server = StandInOpa([str(root)])
            await server.start()
            remote = build_decider(PolicyConfig(engine="opa", opa_url=server.url,
                                                cache_ttl_ms=0, timeout_ms=1000))
            await remote.start()
            rows.append((f"remote stand-in ({label})",
                         await _measure(remote, "ztproxy/authz/decision", max(n // 4, 1),
                                        False)))
            await remote.close()
            await server.close()
    print(f"{'row':32} {'n':>6} {'p50 us':>9} {'p99 us':>9} {'mean us':>9}")
    for name, samples in rows:
        s = sorted(samples)
        p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
        print(f"{name:32} {len(s):6d} {statistics.median(s):9.1f} {p99:9.1f} "
              f"{statistics.fmean(s):9.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    asyncio.run(main(min(parser.parse_args().n, 100_000)))
