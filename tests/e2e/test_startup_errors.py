"""Startup errors in one line (issue 15, "errors"): each names the file, key or URL it is
about, exits non-zero, and prints no traceback unless `--debug`. Replays what a new
user met: a Rego syntax error passed check-config and then `run` printed a 25-line
traceback; an audit dir that is a file said "EEXIST: File exists" with no path;
duplicate YAML keys were last-wins (`user: none` below `user: required` passed); an
unknown key had no hint; a remote OPA that did not answer was not mentioned;
`certs init` said "force=True"; `token mint` on a missing file said "cannot load"."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from e2e_harness import open_route

from ztproxy.devtools.lab import proxy_config
from ztproxy.devtools.pki import DevPki


def _ztproxy(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ztproxy", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def _write(tmp_path: Path, pki: DevPki, policy_dir: Path, **over: Any) -> Path:
    raw = proxy_config(
        pki,
        upstreams={},
        audit_dir=tmp_path / "audit",
        policy_dirs=[policy_dir],
        routes=[open_route("http://127.0.0.1:9", path_prefix="/")],
    )
    raw.update(over)
    path = tmp_path / "ztproxy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_rego_syntax_error_is_one_line_in_check_config_and_run(
    pki: DevPki, tmp_path: Path, test_policy_dir: Path
) -> None:
    bad = test_policy_dir / "broken.rego"
    bad.write_text("package broken\n\nallow if {\n")
    config = _write(tmp_path, pki, test_policy_dir)
    for command in ("check-config", "run"):
        line = _one_line(_ztproxy(command, "--config", str(config)))
        assert str(bad) in line, line
    debug = _ztproxy("--debug", "run", "--config", str(config))
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_audit_dir_that_is_a_file_is_named(
    pki: DevPki, tmp_path: Path, test_policy_dir: Path
) -> None:
    config = _write(tmp_path, pki, test_policy_dir)
    raw = yaml.safe_load(config.read_text())
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    raw["audit"]["dir"] = str(blocker)
    config.write_text(yaml.safe_dump(raw))
    for command in ("check-config", "run"):
        line = _one_line(_ztproxy(command, "--config", str(config)))
        assert line == f"ztproxy: error: audit.dir {blocker}: exists and is not a directory"


def test_check_config_opens_the_audit_dir_for_writing(
    pki: DevPki, tmp_path: Path, test_policy_dir: Path
) -> None:
    config = _write(tmp_path, pki, test_policy_dir)
    audit = tmp_path / "audit"
    audit.mkdir()
    result = _ztproxy("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert list(audit.iterdir()) == []  # the probe file is gone again


def test_duplicate_yaml_key_is_an_error_naming_its_path(
    pki: DevPki, tmp_path: Path, test_policy_dir: Path
) -> None:
    config = _write(tmp_path, pki, test_policy_dir)
    text = config.read_text().replace("  user: none\n", "  user: required\n  user: none\n")
    assert text.count("user: none") == 1
    config.write_text(text)
    line = _one_line(_ztproxy("check-config", "--config", str(config)))
    assert line.startswith(f"{config}: routes[0].user: duplicate key (line "), line


def test_unknown_key_suggests_the_closest_known_one(
    pki: DevPki, tmp_path: Path, test_policy_dir: Path
) -> None:
    config = _write(tmp_path, pki, test_policy_dir)
    raw = yaml.safe_load(config.read_text())
    raw["routes"][0]["devcie"] = raw["routes"][0].pop("device")
    config.write_text(yaml.safe_dump(raw))
    line = _one_line(_ztproxy("check-config", "--config", str(config)))
    assert line == f"{config}: routes[0].devcie: unknown key (did you mean 'device'?)"


def test_unreachable_remote_opa_is_a_warning_naming_the_url(
    pki: DevPki, tmp_path: Path, test_policy_dir: Path
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    config = _write(
        tmp_path, pki, test_policy_dir, policy={"engine": "opa", "opa_url": url, "timeout_ms": 200}
    )
    result = _ztproxy("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    warning = result.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith(f"ztproxy: warning: policy.opa_url {url}")


def test_certs_init_without_force_speaks_plainly(tmp_path: Path) -> None:
    out = tmp_path / "dev"
    assert _ztproxy("certs", "init", "--out", str(out)).returncode == 0
    line = _one_line(_ztproxy("certs", "init", "--out", str(out)))
    assert "--force" in line and "force=True" not in line and str(out) in line


def test_token_mint_names_a_missing_key_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    line = _one_line(
        _ztproxy("token", "mint", "--kind", "user", "--key", str(missing), "--sub", "alice")
    )
    assert line == f"ztproxy token mint: {missing}: file not found"
