"""The proxy benchmark's processes: spawn one pinned to CPUs in its own session (its log in
a file), wait until it says it is ready or a port answers, stop it by its process group.

Part of bench/bench_proxy.py (run that). Also holds the shared paths and CPU split and the
code of the plain-HTTP aiohttp upstream. Loopback only; every wait is bounded in time;
only processes started here are stopped, each by its own process group id.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
PY = sys.executable
PROXY_CPU, LOAD_CPU = 0, 1


# == processes ============================================================================
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int
    admin_port: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def pids(self) -> list[int]:
        """The process and its direct children (the workers of `--workers N`)."""
        out = [self.popen.pid]
        try:
            for task in os.listdir(f"/proc/{self.popen.pid}/task"):
                kids = Path(f"/proc/{self.popen.pid}/task/{task}/children").read_text()
                out += [int(k) for k in kids.split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
        return out


def spawn(
    name: str,
    argv: Sequence[str],
    cpus: set[int],
    logdir: Path,
    port: int,
    admin_port: int | None = None,
    cwd: Path | None = None,
    **extra: Any,
) -> Proc:
    log = logdir / f"{name}.log"
    fh = open(log, "wb")  # noqa: SIM115 - owned by the child; closed with the process

    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    popen = subprocess.Popen(
        list(argv),
        stdout=fh,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=pin,
        start_new_session=True,
        cwd=str(cwd or REPO),
    )
    fh.close()
    return Proc(name, popen, log, port, admin_port, extra)


def wait_ready(proc: Proc, needle: str, count: int = 1, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.log.read_text(errors="replace").count(needle) >= count:
            return
        if proc.popen.poll() is not None:
            break
        time.sleep(0.05)
    tail = proc.log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"{proc.name} did not start (exit {proc.popen.poll()}):\n{tail}")


def stop(proc: Proc, timeout: float = 15.0) -> int | None:
    """SIGTERM to the process group we created, then SIGKILL after `timeout`."""
    if proc.popen.poll() is None:
        try:
            os.killpg(proc.popen.pid, signal.SIGTERM)
            proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait(5)
        except ProcessLookupError:
            pass
    return proc.popen.returncode


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


NO_UVLOOP = (
    "import runpy, sys; sys.modules['uvloop'] = None; sys.argv[0] = 'ztproxy'; "
    "runpy.run_module('ztproxy', run_name='__main__', alter_sys=True)"
)
UPSTREAM_CODE = """
import asyncio, json, os, sys
from aiohttp import web
async def handle(request):
    if request.can_read_body:
        await request.read()
    body = json.dumps({"service": "bench-upstream", "method": request.method,
                       "path": request.raw_path,
                       "spiffe": request.headers.get("x-client-spiffe-id")})
    return web.Response(text=body, content_type="application/json")
async def main(port):
    runner = web.ServerRunner(web.Server(handle), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    print("upstream listening", port, flush=True)
    await asyncio.sleep(float(sys.argv[2]))
try:
    import uvloop; uvloop.run(main(int(sys.argv[1])))
except ImportError:
    asyncio.run(main(int(sys.argv[1])))
"""
