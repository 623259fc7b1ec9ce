"""A policy the proxy refuses: `check-config` and `run` exit 1 with one line naming the
file, line and construct, no traceback (start), and before any worker is forked."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from policy_support import SHIPPED

REPO = Path(__file__).resolve().parents[2]


def _ztproxy(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ztproxy", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"RUST_BACKTRACE": "0", "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    done = _ztproxy("certs", "init", "--out", str(tmp_path / "certs/dev"))
    assert done.returncode == 0, done.stderr
    raw = yaml.safe_load((REPO / "examples/quickstart/config.yaml").read_text())
    policies = tmp_path / "policies"

    shutil.copytree(SHIPPED, policies)
    raw.setdefault("policy", {})["policy_dirs"] = [str(policies)]
    raw["listener"]["port"] = 0
    raw.setdefault("admin", {})["port"] = 0
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# the first line of the shipped `decision` rule: where the conflict is reported
DEFAULT_DECISION_LINE = next(
    n
    for n, line in enumerate(
        (SHIPPED / "ztproxy" / "authz.rego").read_text(encoding="utf-8").splitlines(), 1
    )
    if line.startswith("default decision")
)


@pytest.mark.parametrize(
    ("file", "text", "where"),
    [
        (
            "ztproxy/authz/data.json",
            '{"decision": {"allowed": true}}',
            f"authz.rego:{DEFAULT_DECISION_LINE}: rule data.ztproxy.authz.decision: "
            "conflicts with a data document",
        ),
        (
            "ztproxy/extra.rego",
            'package ztproxy.extra\nimport rego.v1\n\nx if http.send({"url": "u"})\n',
            "extra.rego:4: builtin http.send",
        ),
        ("ztproxy/segmentation/more.yaml", "a: [1\n", "more.yaml:2: YAML"),
    ],
)
@pytest.mark.parametrize("command", ["check-config", "run"])
def test_refused_policy_is_one_line_exit_1(
    config: Path, command: str, file: str, text: str, where: str
) -> None:
    target = config.parent / "policies" / file
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    done = _ztproxy(command, "--config", str(config))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "policy does not load" in lines[0] and where in lines[0], lines[0]
    assert "Traceback" not in done.stderr


def test_typo_in_decision_path_is_refused_by_check_config(config: Path) -> None:
    raw = yaml.safe_load(config.read_text())
    raw["policy"]["decision_path"] = "ztproxy/authz/decisoin"
    config.write_text(yaml.safe_dump(raw))
    done = _ztproxy("check-config", "--config", str(config))
    assert done.returncode == 1
    assert "no rule defines data.ztproxy.authz.decisoin" in done.stderr
