"""The proxy as a real process: `ztproxy run`, SIGTERM drains and exits 0, SIGKILL under
load loses nothing that was checkpointed and the chain carries on after a restart, and
`ztproxy audit verify` proves it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import yaml
from e2e_harness import open_route

from ztproxy.devtools.lab import audit_public_key, client_context, proxy_config
from ztproxy.devtools.pki import DevPki

SOAK_SECONDS = float(os.environ.get("ZTPROXY_SOAK_SECONDS", "3"))


def _config(pki: DevPki, tmp_path: Path, upstream: str, policy_dir: Path) -> Path:
    raw = proxy_config(
        pki,
        upstreams={},
        audit_dir=tmp_path / "audit",
        policy_dirs=[policy_dir],
        routes=[open_route(upstream, path_prefix="/")],
        admin_port=None,
    )
    raw["audit"]["checkpoint_every_records"] = 50
    raw["audit"]["checkpoint_interval_seconds"] = 0.2
    raw["logging"] = {"level": "warning", "format": "json"}
    path = tmp_path / "ztproxy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def _start(config: Path, workers: int = 1) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ztproxy",
            "run",
            "--config",
            str(config),
            "--workers",
            str(workers),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )  # its own group: killpg reaches workers
    assert proc.stdout is not None
    loop = asyncio.get_running_loop()
    # the supervisor says so once, when every worker listens
    line = await asyncio.wait_for(loop.run_in_executor(None, proc.stdout.readline), 30)
    if b"listening on" not in line:
        proc.kill()
        raise AssertionError(f"proxy did not start: {line!r} {proc.stderr.read()!r}")
    assert line.rstrip().endswith(f"workers {workers}".encode()), line
    return proc, int(line.split(b"https://127.0.0.1:")[1].split()[0])


def _verify(audit_dir: Path, pki: DevPki) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "ztproxy",
            "audit",
            "verify",
            str(audit_dir),
            "--key",
            str(audit_public_key(pki)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_sigterm_drains_in_flight_and_exits_0(
    pki: DevPki, tmp_path: Path, upstream: str, test_policy_dir: Path
) -> None:
    proc, port = await _start(_config(pki, tmp_path, upstream, test_policy_dir))
    ctx = client_context(pki, "checkout")
    try:
        async with aiohttp.ClientSession() as s:
            task = asyncio.ensure_future(s.get(f"https://localhost:{port}/slow/800", ssl=ctx))
            await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            resp = await task
            assert resp.status == 200
            await resp.read()
        code = await asyncio.get_running_loop().run_in_executor(None, proc.wait, 30)
        assert code == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    result = _verify(tmp_path / "audit", pki)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


async def test_process_group_sigterm_still_signs_the_last_checkpoint(
    pki: DevPki, tmp_path: Path, upstream: str, test_policy_dir: Path
) -> None:
    """`kill -TERM -PGID` (and systemd's KillMode=control-group) signals the workers too,
    and the supervisor relays another SIGTERM: the second one came while the worker was
    draining, with the default handler back, and killed it before its final checkpoint
    (exit 15, `audit verify` exit 3)."""
    proc, port = await _start(_config(pki, tmp_path, upstream, test_policy_dir))
    ctx = client_context(pki, "checkout")
    try:
        async with aiohttp.ClientSession() as s:
            for i in range(5):
                async with s.get(f"https://localhost:{port}/pg/{i}", ssl=ctx) as r:
                    assert r.status == 200
            task = asyncio.ensure_future(s.get(f"https://localhost:{port}/slow/600", ssl=ctx))
            await asyncio.sleep(0.2)
            os.killpg(proc.pid, signal.SIGTERM)
            resp = await task
            assert resp.status == 200
            await resp.read()
        code = await asyncio.get_running_loop().run_in_executor(None, proc.wait, 30)
        assert code == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    result = _verify(tmp_path / "audit", pki)
    assert result.returncode == 0, result.stdout + result.stderr


async def _load(port: int, pki: DevPki, seconds: float, stop: asyncio.Event) -> int:
    ctx = client_context(pki, "checkout")
    sent = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=8)
    async with aiohttp.ClientSession(connector=connector) as s:

        async def one(i: int) -> None:
            nonlocal sent
            try:
                async with s.get(f"https://localhost:{port}/load/{i}", ssl=ctx) as r:
                    await r.read()
                    sent += 1
            except (aiohttp.ClientError, OSError):
                pass

        i = 0
        while time.monotonic() < deadline and not stop.is_set() and i < 20000:
            await asyncio.gather(*(one(i + k) for k in range(8)))
            i += 8
    return sent


@pytest.mark.slow
async def test_sigkill_under_load_then_restart_verifies(
    pki: DevPki, tmp_path: Path, upstream: str, test_policy_dir: Path
) -> None:
    config = _config(pki, tmp_path, upstream, test_policy_dir)
    proc, port = await _start(config)
    stop = asyncio.Event()
    load = asyncio.ensure_future(_load(port, pki, SOAK_SECONDS + 5, stop))
    await asyncio.sleep(max(1.0, SOAK_SECONDS / 2))
    os.killpg(proc.pid, signal.SIGKILL)  # the supervisor and its workers, as a power cut
    proc.wait(10)
    stop.set()
    before = await load
    assert before > 20, "the load generator got almost nothing through"
    proc, port = await _start(config)  # the chain continues from the records on disk
    try:
        stop2 = asyncio.Event()
        after = await _load(port, pki, 1.0, stop2)
        assert after > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    result = _verify(tmp_path / "audit", pki)
    # Everything is covered by a checkpoint after the clean shutdown; a line torn by the
    # kill is reported as a torn tail (exit 3), never as tampering (exit 1).
    assert result.returncode in (0, 3), result.stdout + result.stderr
    assert "INVALID" not in result.stdout


async def test_workers_share_the_port_each_with_its_own_chain(
    pki: DevPki, tmp_path: Path, upstream: str, test_policy_dir: Path
) -> None:
    proc, port = await _start(_config(pki, tmp_path, upstream, test_policy_dir), workers=2)
    ctx = client_context(pki, "checkout")
    try:
        for i in range(40):  # a new connection each time: the kernel spreads them
            async with aiohttp.ClientSession() as s:
                async with s.get(f"https://localhost:{port}/w/{i}", ssl=ctx) as r:
                    assert r.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    chains = sorted(p.name for p in (tmp_path / "audit").glob("w*-000001.jsonl"))
    assert chains == ["w0-000001.jsonl", "w1-000001.jsonl"]
    lines = sum(len(p.read_text().splitlines()) for p in (tmp_path / "audit").glob("w*-0*.jsonl"))
    assert lines == 40
    result = _verify(tmp_path / "audit", pki)
    assert result.returncode == 0, result.stdout + result.stderr
