"""Running one proxy on one event loop: signals, and the worker's side of the
supervisor's control channel.

SIGTERM / SIGINT: stop accepting, drain in-flight requests up to the deadline, close
the audit log with a final checkpoint, exit 0. SIGHUP: reload (config, TLS material,
issuers, policy); a failed reload keeps what runs.

Under the supervisor (`server.workers`, which forks `worker_main` here) the worker gets
the listening socket the supervisor bound, no admin listener of its own (the supervisor
serves /metrics and /readyz for all workers), and a control socket: it reports
"started", answers the supervisor's questions, and shuts down when the supervisor goes
away.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import signal
import socket
import sys
import traceback

import structlog
from prometheus_client import generate_latest

from ..config.load import Config
from .app import Proxy
from .control import read_frame, write_frame

log = structlog.get_logger("ztproxy.server")


async def _answer(
    proxy: Proxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stop: asyncio.Event
) -> None:
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


async def serve(
    config: Config,
    *,
    worker_id: int = 0,
    reuse_port: bool = False,
    ready: asyncio.Event | None = None,
    sock: socket.socket | None = None,
    control: socket.socket | None = None,
) -> int:
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
        line = (
            f"ztproxy listening on https://{config.listener.address}:{proxy.port}"
            + (
                f" (admin http://{config.admin.address}:{proxy.admin_port})"
                if proxy.admin_port
                else ""
            )
            + f" worker {worker_id}\n"
        )
        # One write(2) of a short line (print() writes the text and the newline apart).
        os.write(sys.stdout.fileno(), line.encode())
    try:
        await stop.wait()
        log.info(
            "shutting_down", worker=worker_id, drain_seconds=config.timeouts.shutdown_drain_seconds
        )
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


# -- the forked child ------------------------------------------------------------------
def _uvloop_policy() -> None:
    try:
        import uvloop  # a dependency on POSIX; absent elsewhere
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _max_fd() -> int:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return soft if 0 < soft < 1 << 20 else 1 << 16
    except (ImportError, OSError, ValueError):
        return 1 << 16


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when the supervisor dies (EOF on the control socket
    covers the other platforms)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def worker_main(
    config: Config,
    worker_id: int,
    sock: socket.socket,
    control: socket.socket,
    log_fd: int,
    debug: bool,
) -> int:
    """The forked child: nothing of the supervisor's event loop is used here."""
    gc.freeze()  # the supervisor's objects are never collected here (their fds close below)
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    os.dup2(log_fd, 2)
    # every descriptor of the supervisor's but these: its event loop, the admin socket
    # and its connections, the other workers' pipes (a scrape's connection must not
    # stay open in a worker, nor the admin port bound when the supervisor is gone)
    keep = sorted({0, 1, 2, sock.fileno(), control.fileno()})
    for low, high in zip([k + 1 for k in keep], [*keep[1:], _max_fd()], strict=True):
        if low < high:
            os.closerange(low, high)
    _die_with_parent()
    _uvloop_policy()
    try:
        return asyncio.run(serve(config, worker_id=worker_id, sock=sock, control=control))
    except Exception as exc:  # noqa: BLE001 - the worker's outermost handler: one line
        if debug:
            traceback.print_exc()
        print(f"ztproxy: worker {worker_id}: {one_line(exc)}", file=sys.stderr, flush=True)
        return 1


def one_line(exc: BaseException) -> str:
    """An exception as one line that names what it is about."""
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.filename}: {(exc.strerror or text).lower()}"
    return text or type(exc).__name__
