"""The supervisor: one process that binds the listener and the admin port once, forks
the workers, and speaks for all of them.

- Binding: the listening socket is bound here, once, without SO_REUSEPORT, so a second
  `ztproxy run` on the same port fails ("address in use") instead of silently taking
  half the traffic. Workers inherit the socket across fork() and accept on it; the
  kernel hands each connection to one of them.
- Workers: each is a forked process running `serve()` with its own audit chain (its
  segment files carry the worker id) and its own caches. A worker that dies while the
  supervisor is not stopping is forked again after a backoff (0.5 s doubling to 30 s;
  a worker that ran a minute starts the count over). A worker that fails before the
  first start of all workers completes stops the whole start: the error is a startup
  error, not a crash.
- Logs: each worker's stderr is a pipe read here; the supervisor writes each line whole
  (one line never carries two workers' text, whatever its length).
- Admin: the supervisor serves /healthz, /readyz (ready only when every worker is
  started and says it is ready) and /metrics (every worker's metrics summed, see
  `metrics.merge_expositions`), asking each worker over its control socket
  (`server.control`).
- Signals: SIGTERM / SIGINT are relayed to the workers, which drain and exit; the
  supervisor exits with the worst status. SIGHUP is relayed (each worker reloads).
  Workers shut down by themselves when the supervisor goes away (their control socket
  reads EOF; on Linux also PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import sys
import time
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from ..config.load import Config
from ..metrics import Merged, merge_expositions
from .acceptor import listening_socket
from .control import read_frame, write_frame
from .logrelay import LineRelay, write_whole
from .serve import worker_main

log = structlog.get_logger("ztproxy.supervisor")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STABLE_SECONDS = 60.0  # a worker that ran this long starts its backoff over
START_TIMEOUT = 60.0  # a worker that has not said "started" by then is killed
ASK_TIMEOUT = 2.0  # /metrics and /readyz: how long one worker may take to answer


class StartupError(Exception):
    """The proxy cannot start; the message is one line naming what (port, file)."""


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def bind(address: str, port: int, what: str) -> socket.socket:
    """Bind and listen once; a busy port is a StartupError naming address:port."""
    try:
        return listening_socket(address, port, reuse_port=False)
    except OSError as exc:
        where = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        reason = (
            "address in use"
            if exc.errno == 98 or "in use" in str(exc)
            else (exc.strerror or str(exc)).lower()
        )
        raise StartupError(f"{what} {where}: {reason}") from None


@dataclasses.dataclass(slots=True)
class _Worker:
    worker_id: int
    pid: int = 0
    started_at: float = 0.0
    started: bool = False
    failures: int = 0
    restarts: int = 0
    writer: asyncio.StreamWriter | None = None
    listening: asyncio.Future[bool] | None = None  # set by the reader on "started"
    pending: dict[int, asyncio.Future[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    log_fd: int = -1
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    exited: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    status: int = 0


class Supervisor:
    def __init__(
        self,
        config: Config,
        count: int,
        listener: socket.socket,
        admin: socket.socket | None,
        *,
        debug: bool = False,
    ) -> None:
        self.config = config
        self.count = count
        self.listener = listener
        self.admin_sock = admin
        self.debug = debug
        # workers serve no admin port of their own: this process answers for them
        self.worker_config = dataclasses.replace(
            config, admin=dataclasses.replace(config.admin, enabled=False)
        )
        self.workers = [_Worker(i) for i in range(count)]
        self.stopping = False
        self.starting = True
        self._asked = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lines = LineRelay(write_whole)
        self.registry = CollectorRegistry()
        self.restarts = Counter(
            "ztproxy_worker_restarts",
            "Workers forked again after they died",
            ["worker"],
            registry=self.registry,
        )
        self.up = Gauge("ztproxy_workers_up", "Workers started and running", registry=self.registry)

    # -- workers ------------------------------------------------------------------------
    async def _fork(self, w: _Worker) -> None:
        loop = asyncio.get_running_loop()
        mine, theirs = socket.socketpair()
        log_r, log_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError:
            mine.close()
            theirs.close()
            os.close(log_r)
            os.close(log_w)
            raise
        if pid == 0:  # the child
            code = 1
            try:
                code = worker_main(
                    self.worker_config, w.worker_id, self.listener, theirs, log_w, self.debug
                )
            finally:
                os._exit(code)
        theirs.close()
        os.close(log_w)
        w.pid, w.started, w.started_at, w.status = pid, False, time.monotonic(), 0
        w.exited.clear()
        w.log_fd = log_r
        os.set_blocking(log_r, False)
        self._lines.open(log_r)
        loop.add_reader(log_r, self._relay, log_r)
        reader, w.writer = await asyncio.open_connection(sock=mine)
        w.listening = loop.create_future()
        self._spawn(self._read_loop(w, reader, w.listening), f"control-{w.worker_id}")

    async def _read_loop(
        self, w: _Worker, reader: asyncio.StreamReader, listening: asyncio.Future[bool]
    ) -> None:
        """Every frame from one worker: "started" once, then answers matched to their
        questions by id (an answer that comes after its question gave up is dropped)."""
        try:
            while (frame := await read_frame(reader)) is not None:
                if frame.get("op") == "started":
                    if not listening.done():
                        listening.set_result(True)
                    continue
                waiter = w.pending.get(frame.get("id", -1))
                if waiter is not None and not waiter.done():
                    waiter.set_result(frame)
        except (OSError, ValueError) as exc:
            log.error("control_channel_failed", worker=w.worker_id, error=str(exc))
        finally:
            if not listening.done():
                listening.set_result(False)

    async def _await_started(self, w: _Worker) -> bool:
        assert w.listening is not None
        try:
            ok = await asyncio.wait_for(asyncio.shield(w.listening), START_TIMEOUT)
        except TimeoutError:
            ok = False
        if not ok:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signal.SIGKILL)
            return False
        w.started = True
        self.up.set(sum(1 for x in self.workers if x.started))
        log.info("worker_started", worker=w.worker_id, pid=w.pid)
        return True

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for w in self.workers:
                if w.pid == pid:
                    self._exited(w, os.waitstatus_to_exitcode(status))

    def _exited(self, w: _Worker, code: int) -> None:
        w.status = code
        w.started = False
        self.up.set(sum(1 for x in self.workers if x.started))
        if w.writer is not None:
            w.writer.close()
            w.writer = None
        self._drain_log(w)
        w.exited.set()
        if self.stopping or self.starting:
            return  # a worker that fails at the first start fails the start
        ran = time.monotonic() - w.started_at
        w.failures = 1 if ran >= STABLE_SECONDS else w.failures + 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (w.failures - 1))
        log.error(
            "worker_exited", worker=w.worker_id, pid=w.pid, status=code, restart_in_seconds=delay
        )
        self._spawn(self._restart(w, delay), f"restart-{w.worker_id}")

    async def _restart(self, w: _Worker, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.stopping:
            return
        w.restarts += 1
        self.restarts.labels(str(w.worker_id)).inc()
        try:
            await self._fork(w)
        except OSError as exc:  # no process or descriptor to be had now: try again later
            w.failures += 1
            again = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (w.failures - 1))
            log.error(
                "worker_fork_failed", worker=w.worker_id, error=str(exc), restart_in_seconds=again
            )
            self._spawn(self._restart(w, again), f"restart-{w.worker_id}")
            return
        await self._await_started(w)  # on failure the reaper schedules the next try

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- logs ---------------------------------------------------------------------------
    def _relay(self, fd: int) -> bool:
        """Read what the worker wrote; write its complete lines. False when there is
        nothing more to read now (or the pipe is closed)."""
        if fd not in self._lines:
            return False
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self._close_log(fd)
            return False
        self._lines.feed(fd, chunk)
        return True

    def _drain_log(self, w: _Worker) -> None:
        """The worker is gone: write the rest of what it said before anything else."""
        if w.log_fd >= 0:
            while self._relay(w.log_fd):
                pass

    def _close_log(self, fd: int) -> None:
        self._lines.close(fd)
        with contextlib.suppress(RuntimeError, ValueError, OSError):
            asyncio.get_running_loop().remove_reader(fd)
        with contextlib.suppress(OSError):
            os.close(fd)
        for w in self.workers:
            if w.log_fd == fd:
                w.log_fd = -1

    # -- questions to the workers -------------------------------------------------------
    async def _ask(self, w: _Worker, op: str) -> dict[str, Any] | None:
        """One question to one worker; None when it does not answer in time."""
        writer = w.writer
        if not w.started or writer is None:
            return None
        self._asked += 1
        ident = self._asked
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        w.pending[ident] = waiter
        try:
            async with w.lock:
                await write_frame(writer, {"op": op, "id": ident})
            return await asyncio.wait_for(waiter, ASK_TIMEOUT)
        except (TimeoutError, OSError):
            return None
        finally:
            w.pending.pop(ident, None)

    async def readiness(self) -> dict[str, Any]:
        answers = await asyncio.gather(*(self._ask(w, "readyz") for w in self.workers))
        workers = []
        for w, answer in zip(self.workers, answers, strict=True):
            ready = bool(answer and answer.get("ready"))
            entry: dict[str, Any] = {
                "worker": w.worker_id,
                "pid": w.pid,
                "started": w.started,
                "ready": ready,
                "restarts": w.restarts,
            }
            if answer:
                entry["components"] = answer.get("components")
                entry["policy_revision"] = answer.get("policy_revision")
            workers.append(entry)
        ready = not self.stopping and all(e["ready"] for e in workers)
        revisions = {e.get("policy_revision") for e in workers}
        return {
            "ready": ready,
            "workers": workers,
            "policy_revision": revisions.pop() if len(revisions) == 1 else None,
        }

    async def metrics(self) -> bytes:
        answers = await asyncio.gather(*(self._ask(w, "metrics") for w in self.workers))
        texts = [a["text"] for a in answers if a and isinstance(a.get("text"), str)]
        registry = CollectorRegistry()
        registry.register(Merged(merge_expositions(texts)))
        return generate_latest(registry) + generate_latest(self.registry)

    async def _start_admin(self) -> web.AppRunner | None:
        if self.admin_sock is None:
            return None

        async def healthz(request: web.Request) -> web.Response:
            return web.json_response({"status": "alive"})

        async def readyz(request: web.Request) -> web.Response:
            state = await self.readiness()
            return web.json_response(state, status=200 if state["ready"] else 503)

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(
                body=await self.metrics(), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.SockSite(runner, self.admin_sock).start()
        return runner

    # -- the whole life -----------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGCHLD, self._reap)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._relay_signal, signal.SIGHUP)
        for w in self.workers:
            await self._fork(w)
        started = await asyncio.gather(*(self._await_started(w) for w in self.workers))
        self._reap()
        self.starting = False
        runner = None
        if all(started) and not any(w.exited.is_set() for w in self.workers):
            runner = await self._start_admin()
            self._announce()
            await stop.wait()
            code = 0
        else:
            code = 1
        self.stopping = True
        self._relay_signal(signal.SIGTERM)
        for w in self.workers:
            await w.exited.wait()
            code = max(code, abs(w.status))
        for fd in self._lines.streams():
            self._close_log(fd)
        for task in list(self._tasks):
            task.cancel()
        if runner is not None:
            await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            loop.remove_signal_handler(sig)
        return code

    def _relay_signal(self, signum: int) -> None:
        for w in self.workers:
            if w.pid and not w.exited.is_set():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signum)

    def _announce(self) -> None:
        lst = self.config.listener
        port = self.listener.getsockname()[1]
        admin = ""
        if self.admin_sock is not None:
            admin = (
                f" (admin http://{self.config.admin.address}:{self.admin_sock.getsockname()[1]})"
            )
        line = f"ztproxy listening on https://{lst.address}:{port}{admin} workers {self.count}\n"
        with contextlib.suppress(OSError, ValueError):  # nobody reads stdout: carry on
            os.write(sys.stdout.fileno(), line.encode())


def run_workers(config: Config, workers: int, *, debug: bool = False) -> int:
    """Bind once, check what the workers will load (`preflight`), fork `workers`
    (0: one per core), supervise until SIGTERM / SIGINT. Raises StartupError (one
    line) when the ports cannot be bound, the preflight's error when it fails."""
    count = workers if workers > 0 else default_workers()
    lst = config.listener
    listener = bind(lst.address, lst.port, "listener")
    admin = None
    if config.admin.enabled:
        try:
            admin = bind(config.admin.address, config.admin.port, "admin")
        except StartupError:
            listener.close()
            raise
    try:
        from .preflight import preflight

        for warning in asyncio.run(preflight(config)):
            print(f"ztproxy: warning: {warning}", file=sys.stderr, flush=True)
        supervisor = Supervisor(config, count, listener, admin, debug=debug)
        return asyncio.run(supervisor.run())
    finally:
        listener.close()
        if admin is not None:
            admin.close()
