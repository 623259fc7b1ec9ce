"""`ztproxy policy test`: the runner function and the CLI through argparse + register()."""

from __future__ import annotations

import argparse
import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import pytest
from policy_support import SHIPPED

from ztproxy.policy.testrunner import run_tests


def _cli_module() -> ModuleType:
    try:
        from ztproxy.cli import policy

        return policy
    except ImportError:  # sibling CLI modules not there yet: load ours on its own
        path = Path(__file__).resolve().parents[2] / "ztproxy" / "cli" / "policy.py"
        spec = importlib.util.spec_from_file_location("ztproxy_cli_policy_alone", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ztproxy")
    _cli_module().register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_shipped_policies_pass() -> None:
    report = run_tests([str(SHIPPED)])
    assert report.ok
    assert report.count("PASS") >= 20 and report.count("FAIL") == 0
    names = {o.name for o in report.outcomes}
    assert "data.ztproxy.authz_test.test_allow_checkout_to_payments" in names


def _with_extra(tmp_path: Path, body: str) -> Path:
    dest = tmp_path / "policies"
    shutil.copytree(SHIPPED, dest)
    (dest / "ztproxy" / "extra_test.rego").write_text(
        "package ztproxy.extra_test\nimport rego.v1\nimport data.ztproxy.authz\n" + body
    )
    return dest


def test_failing_and_erroring_tests_are_reported(tmp_path: Path) -> None:
    root = _with_extra(
        tmp_path,
        "test_wrong if { authz.decision.allowed == true }\n"
        "test_boom if { 1 % 0 == 1 }\ntodo_test_later if { false }\n",
    )
    report = run_tests([str(root)])
    assert not report.ok
    status = {o.name.rsplit(".", 1)[1]: o.status for o in report.outcomes}
    assert (status["test_wrong"], status["test_boom"], status["todo_test_later"]) == (
        "FAIL",
        "ERROR",
        "SKIPPED",
    )


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["policy", "test", str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert "data.ztproxy.authz_test.test_deny_method: PASS" in out
    assert "PASS: " in out and "FAIL" not in out
    root = _with_extra(tmp_path, "test_wrong if { false }\n")
    assert _main(["policy", "test", str(root)]) == 1
    out = capsys.readouterr().out
    assert "data.ztproxy.extra_test.test_wrong: FAIL" in out and "FAIL: 1/" in out


def test_cli_load_error_and_no_tests_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.rego").write_text("package bad\nx := \n")
    assert _main(["policy", "test", str(tmp_path)]) == 1
    assert "error:" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "p.rego").write_text("package p\nimport rego.v1\nallow := true\n")
    assert _main(["policy", "test", str(empty)]) == 1
