"""The package works when installed, not only from the repo (issue 15, "packaging"):
from `pip install .` the demo failed with "no Rego policies found", because the
shipped policies were not package data. This builds the wheel from a copy of the
sources, installs it (no dependencies, no index) into a fresh venv that borrows the
test environment's installed dependencies, and runs `ztproxy demo` from a folder far
from the repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = (
    "ztproxy",
    "policies",
    "pyproject.toml",
    "setup.py",
    "MANIFEST.in",
    "README.md",
    "LICENSE",
    "CHANGELOG.md",
)


def _build_wheel(tmp_path: Path) -> Path:
    pytest.importorskip("wheel", reason="`wheel` (in the test extra) builds without isolation")
    src = tmp_path / "src"
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(
                path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_policies")
            )
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(path, src / name)
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(dist),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = dist.glob("ztproxy-*.whl")
    return wheel


def test_wheel_carries_the_shipped_policies_and_the_demo_runs_from_it(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        f"ztproxy/_policies/{p.relative_to(REPO / 'policies').as_posix()}"
        for p in (REPO / "policies").rglob("*")
        if p.is_file() and p.suffix in (".rego", ".json") and "__" not in str(p)
    }
    assert shipped and shipped <= names, sorted(shipped - names)
    assert any(
        n.endswith(".dist-info/licenses/LICENSE") or n.endswith("/LICENSE") for n in names
    ), "the license text travels with the wheel"

    venv = tmp_path / "fresh"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60
    )
    python = venv / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # the dependencies as installed for the tests; their .pth files (the editable
    # ztproxy's finder among them) are not processed from here
    Path(purelib, "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run(
        [str(python), "-c", "import ztproxy; print(ztproxy.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    ).stdout
    assert where.startswith(purelib), where  # the wheel's copy, not the repo's
    away = tmp_path / "elsewhere"
    away.mkdir()
    result = subprocess.run(
        [str(venv / "bin" / "ztproxy"), "demo"],
        capture_output=True,
        text=True,
        cwd=away,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "_policies" in result.stdout  # it found the packaged copy
    assert "audit verdict: VALID" in result.stdout
