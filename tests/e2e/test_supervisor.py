"""One supervisor for many workers (issue 15, "workers"): it binds the listener and the
admin port once, so a second `ztproxy run` on the same port fails in one line instead
of silently taking half the traffic (the old SO_REUSEPORT workers let it); /metrics
adds up every worker's counters (the old one answered for whichever worker the kernel
picked); /readyz answers for all; a crashed worker is forked again; each log line is
written whole."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from e2e_harness import open_route

from ztproxy.devtools.lab import client_context, proxy_config
from ztproxy.devtools.pki import DevPki


def _config(
    pki: DevPki,
    tmp_path: Path,
    upstream: str,
    policy_dir: Path,
    *,
    port: int = 0,
    admin_port: int | None = 0,
    name: str = "ztproxy.yaml",
    level: str = "warning",
) -> Path:
    raw = proxy_config(
        pki,
        upstreams={},
        audit_dir=tmp_path / f"audit-{name}",
        policy_dirs=[policy_dir],
        routes=[open_route(upstream, path_prefix="/")],
        port=port,
        admin_port=admin_port,
    )
    raw["logging"] = {"level": level, "format": "json"}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


class Running:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, admin: int) -> None:
        self.proc, self.port, self.admin = proc, port, admin

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)


def _run(config: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ztproxy", "run", "--config", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


async def _start(config: Path, workers: int) -> Running:
    proc = _run(config, "--workers", str(workers))
    assert proc.stdout is not None and proc.stderr is not None
    line = await asyncio.wait_for(
        asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline), 60
    )
    if b"listening on" not in line:
        proc.kill()
        raise AssertionError(f"did not start: {line!r} {proc.stderr.read()!r}")
    text = line.decode()
    port = int(text.split("https://127.0.0.1:")[1].split()[0])
    admin = int(text.split("admin http://127.0.0.1:")[1].split(")")[0])
    return Running(proc, port, admin)


@pytest.fixture
def procs() -> Iterator[list[Running]]:
    running: list[Running] = []
    yield running
    for r in running:
        if r.proc.poll() is None:
            os.killpg(r.proc.pid, signal.SIGKILL)
            r.proc.wait(10)


async def _admin(admin: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{admin}{path}") as r:
            return r.status, await r.text()


def _requests_total(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("ztproxy_requests_total{")
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("workers", [None, "1"], ids=["default-workers", "one-worker"])
async def test_second_instance_on_the_same_port_fails_in_one_line(
    pki: DevPki,
    tmp_path: Path,
    upstream: str,
    test_policy_dir: Path,
    procs: list[Running],
    workers: str | None,
) -> None:
    """The old workers bound with SO_REUSEPORT: a second instance (say, with an old
    policy) started silently and took half the connections."""
    first = await _start(_config(pki, tmp_path, upstream, test_policy_dir), 2)
    procs.append(first)
    second = _config(pki, tmp_path, upstream, test_policy_dir, port=first.port, name="second.yaml")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ztproxy",
            "run",
            "--config",
            str(second),
            *(["--workers", workers] if workers else []),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines == [f"ztproxy: error: listener 127.0.0.1:{first.port}: address in use"], (
        result.stderr
    )
    assert "Traceback" not in result.stderr + result.stdout
    assert first.proc.poll() is None  # the first one is untouched
    assert first.stop() == 0


async def test_busy_admin_port_fails_in_one_line(
    pki: DevPki, tmp_path: Path, upstream: str, test_policy_dir: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        admin = busy.getsockname()[1]
        config = _config(pki, tmp_path, upstream, test_policy_dir, admin_port=admin)
        result = subprocess.run(
            [sys.executable, "-m", "ztproxy", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"ztproxy: error: admin 127.0.0.1:{admin}: address in use"
    ]


async def test_metrics_add_up_over_all_workers(
    pki: DevPki, tmp_path: Path, upstream: str, test_policy_dir: Path, procs: list[Running]
) -> None:
    """Old: each scrape reached one worker (six scrapes summed to 3, 3, 3, 3, 3, 5 for
    20 requests)."""
    run = await _start(_config(pki, tmp_path, upstream, test_policy_dir), 2)
    procs.append(run)
    ctx = client_context(pki, "checkout")
    n = 24
    for i in range(n):  # a new connection each time: the kernel spreads them
        async with aiohttp.ClientSession() as s:
            async with s.get(f"https://localhost:{run.port}/m/{i}", ssl=ctx) as r:
                assert r.status == 200
    for _ in range(3):  # every scrape, whichever worker the kernel would have picked
        status, text = await _admin(run.admin, "/metrics")
        assert status == 200
        assert _requests_total(text) == n, text
    assert "ztproxy_workers_up 2.0" in text
    status, body = await _admin(run.admin, "/readyz")
    state = json.loads(body)
    assert status == 200 and state["ready"] is True
    assert [w["worker"] for w in state["workers"]] == [0, 1]
    assert all(w["ready"] for w in state["workers"])
    assert run.stop() == 0
    # both workers served: each wrote its own chain
    chains = sorted(p.name for p in (tmp_path / "audit-ztproxy.yaml").glob("w*-000001.jsonl"))
    assert chains == ["w0-000001.jsonl", "w1-000001.jsonl"]


async def test_crashed_worker_is_forked_again(
    pki: DevPki, tmp_path: Path, upstream: str, test_policy_dir: Path, procs: list[Running]
) -> None:
    """Old: a worker that died stayed dead (and its share of connections went with it
    only because the kernel stopped picking its socket)."""
    run = await _start(_config(pki, tmp_path, upstream, test_policy_dir), 2)
    procs.append(run)
    _, body = await _admin(run.admin, "/readyz")
    before = {w["worker"]: w["pid"] for w in json.loads(body)["workers"]}
    os.kill(before[1], signal.SIGKILL)
    state: dict = {}
    for _ in range(200):  # event-driven: ask until the supervisor says so (bounded)
        status, body = await _admin(run.admin, "/readyz")
        state = json.loads(body)
        if status == 200 and state["workers"][1]["pid"] != before[1]:
            break
        assert status == 503 or state["workers"][1]["pid"] == before[1]
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"worker 1 was not restarted: {state}")
    assert state["workers"][0]["pid"] == before[0]
    assert state["workers"][1]["restarts"] == 1
    _, metrics = await _admin(run.admin, "/metrics")
    assert 'ztproxy_worker_restarts_total{worker="1"} 1.0' in metrics
    ctx = client_context(pki, "checkout")
    for i in range(6):
        async with aiohttp.ClientSession() as s:
            async with s.get(f"https://localhost:{run.port}/r/{i}", ssl=ctx) as r:
                assert r.status == 200
    assert run.stop() == 0


async def test_every_log_line_is_whole(
    pki: DevPki, tmp_path: Path, upstream: str, test_policy_dir: Path, procs: list[Running]
) -> None:
    """Old: two workers' JSON lines were glued together (2 of 26 lines held two
    objects). Every stderr line of a two-worker run at info level is one JSON object."""
    run = await _start(_config(pki, tmp_path, upstream, test_policy_dir, level="info"), 2)
    ctx = client_context(pki, "checkout")

    async def one(i: int) -> None:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"https://localhost:{run.port}/l/{i}", ssl=ctx) as r:
                assert r.status == 200

    await asyncio.gather(*(one(i) for i in range(16)))
    assert run.stop() == 0
    assert run.proc.stderr is not None
    lines = run.proc.stderr.read().decode().splitlines()
    assert len(lines) > 10
    events = [json.loads(line) for line in lines]  # raises on a glued or torn line
    assert sum(1 for e in events if e["event"] == "stopped") == 2


async def test_sighup_to_the_supervisor_reloads_every_worker(
    pki: DevPki, tmp_path: Path, upstream: str, test_policy_dir: Path, procs: list[Running]
) -> None:
    config = _config(pki, tmp_path, upstream, test_policy_dir)
    raw = yaml.safe_load(config.read_text())
    raw["policy"]["watch"] = False  # only the signal may reload
    config.write_text(yaml.safe_dump(raw))
    run = await _start(config, 2)
    procs.append(run)
    _, body = await _admin(run.admin, "/readyz")
    old = json.loads(body)["policy_revision"]
    assert old and all(w["policy_revision"] == old for w in json.loads(body)["workers"])
    rego = test_policy_dir / "authz.rego"
    rego.write_text(rego.read_text() + "\n# a new revision\n")
    run.proc.send_signal(signal.SIGHUP)
    state: dict = {}
    for _ in range(200):  # event-driven: ask until both workers say so (bounded)
        _, body = await _admin(run.admin, "/readyz")
        state = json.loads(body)
        revisions = {w.get("policy_revision") for w in state["workers"]}
        if len(revisions) == 1 and old not in revisions:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"not every worker reloaded: {state}")
    assert state["ready"] is True and state["policy_revision"] not in (None, old)
    assert all(w["restarts"] == 0 for w in state["workers"])  # reloaded, not restarted
    assert run.stop() == 0
