"""Running the proxy as a process: signals and workers.

SIGTERM / SIGINT: stop accepting, drain in-flight requests up to the deadline, close
the audit log with a final checkpoint, exit 0. SIGHUP: reload (config, TLS material,
issuers, policy); a failed reload keeps what runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import structlog

from ..config.load import Config
from .app import Proxy

log = structlog.get_logger("ztproxy.server")


async def serve(config: Config, *, worker_id: int = 0, reuse_port: bool = False,
                ready: asyncio.Event | None = None) -> int:
    proxy = Proxy(config, worker_id=worker_id, reuse_port=reuse_port)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloads: set[asyncio.Task[bool]] = set()

    def on_reload() -> None:
        task = loop.create_task(proxy.reload(), name="reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    try:
        await proxy.start()
    except BaseException:
        await proxy.stop()
        raise
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_reload)
    if ready is not None:
        ready.set()
    line = (f"ztproxy listening on https://{config.listener.address}:{proxy.port}"
            + (f" (admin http://{config.admin.address}:{proxy.admin_port})"
               if proxy.admin_port else "") + f" worker {worker_id}\n")
    # One write(2) of a short line: workers share stdout, and print() writes the text and
    # the newline separately, which interleaved two workers' lines.
    os.write(sys.stdout.fileno(), line.encode())
    try:
        await stop.wait()
        log.info("shutting_down", drain_seconds=config.timeouts.shutdown_drain_seconds)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await proxy.stop()
    return 0
