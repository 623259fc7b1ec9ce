"""Worker processes: N processes share the listening port with SO_REUSEPORT; the
kernel spreads connections across them. Each worker has its own audit chain (its
segment files carry the worker id) and its own caches. The parent only starts the
workers, relays SIGTERM / SIGINT / SIGHUP to them, and exits with the worst status.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import sys

from ..config.load import Config
from .serve import serve


def _uvloop_policy() -> None:
    try:
        import uvloop  # a dependency on POSIX; absent elsewhere
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _child(config: Config, worker_id: int, reuse_port: bool) -> int:
    _uvloop_policy()
    return asyncio.run(serve(config, worker_id=worker_id, reuse_port=reuse_port))


def _reserve_port(config: Config) -> tuple[Config, socket.socket | None]:
    """With port 0 and several workers, pick the port once: a socket bound (never
    listening, so it takes no connections) with SO_REUSEPORT holds it while the
    workers bind theirs."""
    if config.listener.port != 0:
        return config, None
    family = socket.AF_INET6 if ":" in config.listener.address else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((config.listener.address, 0))
    port = holder.getsockname()[1]
    listener = dataclasses.replace(config.listener, port=port)
    return dataclasses.replace(config, listener=listener), holder


def run_workers(config: Config, workers: int) -> int:
    count = workers if workers > 0 else (os.cpu_count() or 1)
    if count == 1:
        return _child(config, 0, False)
    config, holder = _reserve_port(config)
    pids: list[int] = []
    for worker_id in range(count):
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                code = _child(config, worker_id, True)
            finally:
                os._exit(code)
        pids.append(pid)

    def relay(signum: int, _frame: object) -> None:
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, relay)
    if holder is not None:
        holder.close()
    worst = 0
    for pid in pids:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        code = os.waitstatus_to_exitcode(status)
        worst = max(worst, abs(code))
    print(f"ztproxy: {count} workers exited, status {worst}", file=sys.stderr)
    return worst
