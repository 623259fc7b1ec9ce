"""`ztproxy policy test` (colliding names, --run, --format json, --coverage) and
`ztproxy policy eval`, through the CLI entry point, on the serving evaluator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from policy_support import SHIPPED

from ztproxy.policy.testrunner import run_tests

COLLIDE = """package t
import rego.v1

x := 1

test_same if x == 1

test_same if x == 2

test_other if x == 1
"""


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ztproxy", "policy", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"RUST_BACKTRACE": "0", "PATH": "/usr/bin:/bin"},
    )


def test_failing_body_is_reported_when_another_test_shares_its_name(tmp_path: Path) -> None:
    (tmp_path / "t_test.rego").write_text(COLLIDE)
    report = run_tests([str(tmp_path)])
    got = {o.name: o.status for o in report.outcomes}
    assert got == {
        "data.t.test_same#01": "PASS",
        "data.t.test_same#02": "FAIL",
        "data.t.test_other": "PASS",
    }
    assert not report.ok


def test_run_filter_json_format_and_coverage(tmp_path: Path) -> None:
    (tmp_path / "t_test.rego").write_text(COLLIDE)
    done = _cli("test", str(tmp_path), "--run", "other$", "--format", "json", "--coverage")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert [t["name"] for t in doc["tests"]] == ["data.t.test_other"]
    files = doc["coverage"]["files"]
    assert files and 0 < files[0]["percent"] <= 100


def test_shipped_policy_tests_pass_with_coverage() -> None:
    report = run_tests([str(SHIPPED)], coverage=True)
    assert report.ok and report.count("PASS") >= 30
    assert any(f.endswith("authz.rego") and p > 90 for f, p, _, _ in report.coverage)


def test_eval_value_undefined_and_error(tmp_path: Path) -> None:
    inp = tmp_path / "in.json"
    inp.write_text('{"destination": {"service": "payments"}}')
    done = _cli(
        "eval",
        "--policies",
        str(SHIPPED),
        "--input",
        str(inp),
        "data.ztproxy.authz.decision.allowed",
    )
    assert (done.returncode, json.loads(done.stdout)) == (0, {"value": False})
    done = _cli("eval", "--policies", str(SHIPPED), "data.ztproxy.authz.no_such_rule")
    assert (done.returncode, json.loads(done.stdout)) == (0, {"undefined": True})
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "p.rego").write_text('package p\nimport rego.v1\nx if http.send({"url": "u"})\n')
    done = _cli("eval", "--policies", str(bad), "data.p.x")
    assert done.returncode == 2
    assert "builtin http.send" in json.loads(done.stdout)["error"]
    assert done.stdout.count("\n") == 1
