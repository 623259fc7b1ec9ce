"""Running one proxy on one event loop: signals, and the worker's side of the
supervisor's control channel.

SIGTERM / SIGINT: stop accepting, drain in-flight requests up to the deadline, close
the audit log with a final checkpoint, exit 0. SIGHUP: reload (config, TLS material,
issuers, policy); a failed reload keeps what runs.

Under the supervisor (`server.workers`) the worker gets the listening socket the
supervisor bound, no admin listener of its own (the supervisor serves /metrics and
/readyz for all workers), and a control socket: it reports "started", answers the
supervisor's questions, and shuts down when the supervisor goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys

import structlog
from prometheus_client import generate_latest

from ..config.load import Config
from .app import Proxy
from .control import read_frame, write_frame

log = structlog.get_logger("ztproxy.server")


async def _answer(proxy: Proxy, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter, stop: asyncio.Event) -> None:
    """Answer the supervisor until it closes the channel; then stop."""
    try:
        while True:
            frame = await read_frame(reader)
            if frame is None:
                break
            op, ident = frame.get("op"), frame.get("id")
            if op == "metrics":
                text = generate_latest(proxy.metrics.registry).decode()
                await write_frame(writer, {"id": ident, "text": text})
            elif op == "readyz":
                await write_frame(writer, {**proxy.readiness(), "id": ident})
            else:
                await write_frame(writer, {"id": ident, "error": f"unknown op {op!r}"})
    except (OSError, ValueError) as exc:
        log.error("control_channel_failed", worker=proxy.worker_id, error=str(exc))
    finally:
        stop.set()  # the supervisor is gone (or mute): shut down as on SIGTERM


async def serve(config: Config, *, worker_id: int = 0, reuse_port: bool = False,
                ready: asyncio.Event | None = None, sock: socket.socket | None = None,
                control: socket.socket | None = None) -> int:
    proxy = Proxy(config, worker_id=worker_id, reuse_port=reuse_port, sock=sock)
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
    answering: asyncio.Task[None] | None = None
    writer: asyncio.StreamWriter | None = None
    if control is not None:
        reader, writer = await asyncio.open_connection(sock=control)
        await write_frame(writer, {"op": "started", "port": proxy.port, "pid": os.getpid()})
        answering = loop.create_task(_answer(proxy, reader, writer, stop), name="control")
    else:
        line = (f"ztproxy listening on https://{config.listener.address}:{proxy.port}"
                + (f" (admin http://{config.admin.address}:{proxy.admin_port})"
                   if proxy.admin_port else "") + f" worker {worker_id}\n")
        # One write(2) of a short line (print() writes the text and the newline apart).
        os.write(sys.stdout.fileno(), line.encode())
    try:
        await stop.wait()
        log.info("shutting_down", worker=worker_id,
                 drain_seconds=config.timeouts.shutdown_drain_seconds)
    finally:
        # The handlers stay while draining: a second SIGTERM (the supervisor relays the
        # one a process-group kill, or systemd's KillMode=control-group, already sent)
        # must not kill the worker before its final checkpoint is signed.
        await proxy.stop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if answering is not None:
            answering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await answering
        if writer is not None:
            writer.close()
    return 0
