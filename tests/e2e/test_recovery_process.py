"""Issue 14, through the real command: a log whose last checkpoint does not verify
under the configured key stops `ztproxy run` (exit 1, the reason in one line on
stderr, nothing signed); `--accept-recovery` starts it, sets the bad checkpoint aside
in quarantine/ and states that in a signed `recovery` record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from e2e_harness import open_route

from ztproxy.devtools.lab import proxy_config
from ztproxy.devtools.pki import DevPki


def _config(tmp_path: Path, pki: DevPki, policy_dir: Path) -> Path:
    raw = proxy_config(
        pki,
        upstreams={},
        audit_dir=tmp_path / "audit",
        policy_dirs=[policy_dir],
        routes=[open_route("http://127.0.0.1:9", path_prefix="/")],
    )
    raw["listener"]["port"] = 0
    raw["admin"] = {"enabled": False}
    path = tmp_path / "ztproxy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _start_then_stop(config: Path, *extra: str) -> str:
    """Run until the supervisor says it listens, then SIGTERM; its output."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ztproxy", "run", "--config", str(config), "--workers", "1", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "ztproxy listening" in line:
            os.killpg(proc.pid, signal.SIGTERM)
            break
    out, _ = proc.communicate(timeout=30)
    return "".join(lines) + out


def test_unverifiable_checkpoint_refuses_start_unless_accepted(
    pki: DevPki, tmp_path: Path, test_policy_dir: Path
) -> None:
    config = _config(tmp_path, pki, test_policy_dir)
    first = _start_then_stop(config)
    assert "ztproxy listening" in first, first
    audit = tmp_path / "audit"
    checkpoints = audit / "w0-checkpoints.jsonl"
    lines = checkpoints.read_text().splitlines()
    last = json.loads(lines[-1])
    sig_line = last["note"].rstrip("\n").rsplit("\n", 1)[1]
    name, sig = sig_line.rsplit(" ", 1)
    flipped = "A" if sig[5] != "A" else "B"
    last["note"] = last["note"].replace(sig_line, f"{name} {sig[:5]}{flipped}{sig[6:]}")
    lines[-1] = json.dumps(last)
    checkpoints.write_text("\n".join(lines) + "\n")
    segment_before = (audit / "w0-000001.jsonl").read_bytes()

    refused = subprocess.run(
        [sys.executable, "-m", "ztproxy", "run", "--config", str(config), "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    said = [ln for ln in refused.stderr.splitlines() if ln.startswith("ztproxy:")]
    assert len(said) == 1 and "does not verify" in said[0] and "--accept-recovery" in said[0]
    assert "Traceback" not in refused.stderr + refused.stdout
    assert (audit / "w0-000001.jsonl").read_bytes() == segment_before  # nothing signed
    assert not (audit / "quarantine").exists()

    accepted = _start_then_stop(config, "--accept-recovery")
    assert "ztproxy listening" in accepted, accepted
    moved = list((audit / "quarantine").iterdir())
    assert moved and any(sig[6:20] in p.read_text() for p in moved)  # set aside, kept
    records = [
        json.loads(ln)
        for p in sorted(audit.glob("w0-0*.jsonl"))
        for ln in p.read_text().splitlines()
        if ln
    ]
    (recovery,) = [r for r in records if r["kind"] == "recovery"]
    assert recovery["accept_recovery"] is True
