"""Fixtures for the examples and the demo: a demo PKI (made once), a demo run whose
audit log and public key are kept in a tmp dir, and a runner for `ztproxy ...` as the
installed command would run (a subprocess of this interpreter, `-m ztproxy`)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from ztproxy.cli import main
from ztproxy.devtools.demo import (
    DemoReport,
    audit_key,
    find_policies,
    prepare_demo,
    run_demo,
)
from ztproxy.devtools.pki import DevPki

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


@dataclass(frozen=True)
class Done:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str) -> Done:
    """`ztproxy ARGS` in process: the same parser and functions, without the ~2 s start
    of a new interpreter. (Not for `demo`, which runs its own event loop.)"""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    return Done(code, out.getvalue(), err.getvalue())


def ztproxy(*args: str, cwd: Path | None = None, timeout: float = 60) -> Done:
    """`ztproxy ARGS` in a subprocess (the same interpreter, so the same install)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "ztproxy", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Done(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def demo_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return prepare_demo(tmp_path_factory.mktemp("demo"))


@dataclass(frozen=True)
class DemoRun:
    report: DemoReport
    audit_dir: Path
    public_key: Path


@pytest.fixture
async def demo_run(demo_pki: DevPki, tmp_path: Path) -> DemoRun:
    audit_dir = tmp_path / "audit"
    report = await run_demo(demo_pki, audit_dir, find_policies())
    key = Path(shutil.copy(audit_key(demo_pki), audit_dir / "audit-public.pem"))
    return DemoRun(report, audit_dir, key)


def sh_commands(markdown: str) -> list[str]:
    """The commands of the ```sh blocks of a README, continuation lines joined."""
    out: list[str] = []
    inside = False
    pending = ""
    for line in markdown.splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```sh" and not inside
            continue
        if not inside:
            continue
        text = pending + line.strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        if text and not text.startswith("#"):
            out.append(text)
    return out


def ztproxy_invocations(commands: Sequence[str]) -> list[str]:
    """Every `ztproxy ...` in `commands`, also inside `$( ... )`, without comments."""
    found = []
    for command in commands:
        at = command.find("ztproxy ")
        while at >= 0:
            if at == 0 or command[at - 1] in " ($;&|":
                rest = command[at:].split(" #", 1)[0]
                if command[max(0, at - 2) : at] == "$(":
                    rest = rest.split(")", 1)[0]
                found.append(rest.split(" | ", 1)[0].split(" > ", 1)[0].strip())
            at = command.find("ztproxy ", at + 1)
    return found
