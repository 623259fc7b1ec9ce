"""Real processes: SIGKILL under load then restart, and a disk that fills up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ztproxy.audit import AuditLog
from ztproxy.audit.note import parse_signed_checkpoint
from ztproxy.audit.verify import verify_directory

from .conftest import REPO, config, event

SCRIPT = Path(__file__).with_name("writer_process.py")


def spawn(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def checkpoint_sizes(directory: Path) -> list[int]:
    path = directory / "w0-checkpoints.jsonl"
    if not path.exists():
        return []
    out = []
    for raw in path.read_bytes().split(b"\n")[:-1]:
        out.append(parse_signed_checkpoint(json.loads(raw)["note"]).checkpoint.size)
    return out


def _ids(paths: list[Path]) -> set[str]:
    """Request ids of the whole records in these files (a torn last line is skipped)."""
    out = set()
    for p in paths:
        for line in p.read_bytes().split(b"\n"):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("request_id"):
                out.add(str(rec["request_id"]))
    return out


async def test_sigkill_under_load_then_restart_verifies(
    tmp_path: Path, keydir: Path, public
) -> None:
    directory = tmp_path / "log"
    proc = spawn("load", str(directory), str(keydir / "audit-private.pem"))
    try:
        assert json.loads(proc.stdout.readline()) == {"started": True}  # type: ignore[union-attr]
        deadline = time.monotonic() + 20
        while len(checkpoint_sizes(directory)) < 4:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    signed_before = max(checkpoint_sizes(directory))

    crashed = verify_directory(directory, [public])
    chain = crashed.chains[0]
    crashed_ids = _ids(sorted(directory.glob("w0-0*.jsonl")))
    assert chain.first_tampering is None, crashed.to_text()
    assert chain.signed >= signed_before > 0  # everything covered by a checkpoint verifies
    assert crashed.status in ("valid", "incomplete")

    log = AuditLog(config(directory, keydir))
    await log.start()
    for i in range(20):
        log.append(event(i))
    await log.close()
    report = verify_directory(directory, [public])
    assert report.valid and report.exit_code == 0, report.to_text()
    after = report.chains[0]
    assert after.records == after.signed >= signed_before + 20
    # A kill -9 between a write and the seal that follows it leaves real records the
    # seal does not cover; recovery cannot tell them from a forgery, so it sets them
    # aside (quarantine/) and says so in the signed recovery record. Nothing is lost:
    # every record the crashed log held is in the chain or in quarantine.
    kept = _ids(sorted(directory.glob("w0-0*.jsonl")))
    quarantined = (
        _ids(sorted((directory / "quarantine").glob("*")))
        if (directory / "quarantine").exists()
        else set()
    )
    assert crashed_ids <= kept | quarantined


@pytest.mark.parametrize("mode", ["deny", "allow"])
def test_disk_full_refuses_or_degrades_then_loses_nothing(
    tmp_path: Path, keydir: Path, public, mode: str
) -> None:
    directory = tmp_path / "log"
    proc = spawn("fsize", str(directory), str(keydir / "audit-private.pem"), mode)
    try:
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    full, recovered, closed = (json.loads(line) for line in out.splitlines())
    assert full["failed"] and full["audit_healthy"] is False
    assert full["accepting"] is (mode == "allow")
    assert recovered["healed"] and recovered["accepting"] and recovered["audit_healthy"]
    assert closed["written"] == 110
    report = verify_directory(directory, [public])
    assert report.valid, report.to_text()
    chain = report.chains[0]
    assert chain.records == chain.signed == 110
    # the write cut short by the limit stays behind as a torn fragment, and was rewritten
    assert any(s.torn is not None for s in chain.segments)
