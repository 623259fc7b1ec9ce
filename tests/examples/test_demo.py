"""`ztproxy demo`, in process (run_demo) and as the command a user types."""

from __future__ import annotations

import dataclasses
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ztproxy.devtools.demo import (
    SCENARIOS,
    Sent,
    find_policies,
    match_outcomes,
    run_demo,
    verify_audit,
)
from ztproxy.devtools.pki import DevPki

from .conftest import DemoRun, cli, ztproxy


async def test_every_scenario_gets_its_status_and_reason(demo_run: DemoRun) -> None:
    report = demo_run.report
    assert report.ok and report.verdict.ok
    assert [o.scenario for o in report.outcomes] == list(SCENARIOS)
    for o in report.outcomes:
        assert o.status == o.scenario.expect_status, o.scenario
        assert o.scenario.expect_reason in o.reasons, (o.scenario.label, o.reasons)
        assert o.decision == ("allow" if o.status == 200 else "deny")
        assert o.request_id
    # one record per request, and one for the refused handshake: nothing else, nothing less
    assert report.records == len(SCENARIOS)
    assert any(line.startswith("summary: VALID") for line in report.verdict.lines)


async def test_the_log_holds_no_token(demo_run: DemoRun) -> None:
    raw = b"".join(p.read_bytes() for p in demo_run.audit_dir.iterdir())
    assert b"eyJ" not in raw  # every JWT starts with a base64url '{"'
    assert b"PRIVATE KEY" not in raw


async def test_a_tampered_log_fails_the_verdict(demo_run: DemoRun) -> None:
    segment = next(demo_run.audit_dir.glob("w0-*.jsonl"))
    lines = segment.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"status":403', b'"status":200')
    segment.write_bytes(b"".join(lines))
    assert not verify_audit(demo_run.audit_dir, demo_run.public_key).ok


async def test_an_unexpected_status_fails_the_demo(demo_pki: DevPki, tmp_path: Path) -> None:
    wrong = dataclasses.replace(SCENARIOS[2], expect_status=200)  # the intruder, denied
    report = await run_demo(
        demo_pki, tmp_path / "audit", find_policies(), scenarios=[SCENARIOS[0], wrong]
    )
    assert report.verdict.ok
    assert [o.expected for o in report.outcomes] == [True, False]
    assert not report.ok


def _lax_policies(tmp: Path) -> Path:
    lax = tmp / "lax" / "ztproxy"
    lax.mkdir(parents=True)
    (lax / "authz.rego").write_text(
        'package ztproxy.authz\n\ndefault decision := {"allowed": true}\n'
    )
    return tmp / "lax"


async def test_the_shipped_policies_decide(demo_pki: DevPki, tmp_path: Path) -> None:
    """With a policy that allows everything, segmentation and posture no longer deny:
    the demo's 403s come from the shipped Rego, not from anywhere else."""
    report = await run_demo(demo_pki, tmp_path / "audit", find_policies(_lax_policies(tmp_path)))
    by_label = {o.scenario.expect_reason: o for o in report.outcomes}
    assert by_label["source_not_allowed"].status == 200
    assert by_label["device_trust_level_too_low"].status == 200
    assert by_label["cert_binding_mismatch"].status == 401  # identity, before policy
    assert not report.ok


def test_find_policies(tmp_path: Path) -> None:
    assert (find_policies() / "ztproxy" / "authz.rego").is_file()
    with pytest.raises(FileNotFoundError):
        find_policies(tmp_path)


def test_match_outcomes_by_request_id_and_handshake_order() -> None:
    a, b, c = SCENARIOS[0], SCENARIOS[7], SCENARIOS[9]
    sent = [Sent(a, 200, "r1"), Sent(b, None, None), Sent(c, 400, "r-missing")]
    records = [
        {
            "kind": "tls_rejected",
            "request_id": "t1",
            "decision": "deny",
            "reason": "no_client_certificate",
        },
        {
            "kind": "request",
            "request_id": "r1",
            "decision": "allow",
            "reason": "policy_allow",
            "policy_reasons": [],
        },
    ]
    got = match_outcomes(sent, records)
    assert [(o.request_id, o.decision, o.reason) for o in got] == [
        ("r1", "allow", "policy_allow"),
        ("t1", "deny", "no_client_certificate"),
        ("r-missing", "-", "not audited"),
    ]


# -- the command --------------------------------------------------------------------------


def test_command_runs_verifies_and_leaves_nothing(tmp_path: Path) -> None:
    audit = tmp_path / "kept"
    done = ztproxy("demo", "--audit-dir", str(audit))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for s in SCENARIOS:
        assert s.request in out
    assert out.count(" ok") >= len(SCENARIOS) and "UNEXPECTED" not in out
    assert "audit verdict: VALID" in out
    assert "eyJ" not in out + done.stderr
    work = Path(re.search(r"dev PKI in (\S+)", out).group(1))  # type: ignore[union-attr]
    assert not work.exists()
    assert (audit / "audit-public.pem").is_file() and list(audit.glob("w0-*.jsonl"))
    verify = cli("audit", "verify", str(audit), "--key", str(audit / "audit-public.pem"))
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_command_exits_1_on_an_unexpected_answer(tmp_path: Path) -> None:
    done = ztproxy("demo", "--policies", str(_lax_policies(tmp_path)))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "UNEXPECTED" in done.stdout and "audit verdict: VALID" in done.stdout


def test_command_refuses_a_non_empty_audit_dir(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    done = cli("demo", "--audit-dir", str(tmp_path))  # refused before anything starts
    assert done.returncode == 2
    assert "not an empty directory" in done.stderr


def _read_until(proc: subprocess.Popen[str], marker: str, seconds: float) -> str:
    assert proc.stdout is not None
    out = ""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out += line
        if marker in line:
            return out
    raise AssertionError(f"no {marker!r} in:\n{out}")


def _commands(text: str) -> dict[str, str]:
    """'# title' followed by a (continued) command line, as printed by --keep."""
    blocks = re.findall(r"^# (.+)\n((?:.*\\\n)*.*)$", text, re.MULTILINE)
    return {title: cmd.replace("\\\n", " ") for title, cmd in blocks}


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_keep_prints_curl_commands_that_work(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ztproxy", "demo", "--keep"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out = _read_until(proc, "Ctrl-C", 60)
        work = Path(re.search(r"^\(cd (\S+);", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
        cmds = _commands(out)

        def code(title: str, *extra: str) -> str:
            command = cmds[title] + " -o /dev/null -w '%{http_code}' " + " ".join(extra)
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=work,
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            return done.stdout.strip()

        assert code("allowed: checkout, alice, laptop-1") == "200"
        assert code("denied by segmentation (checkout may not call reports)") == "403"
        assert code("device token bound to checkout, presented with batch's certificate") == "401"
        assert code("path traversal, sent as is") == "400"
        assert code("no client certificate (the handshake is refused)") == "000"
        assert "eyJ" not in out  # tokens stay in their files
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, rest + err
    assert "audit verdict: VALID" in rest
    # the five curl requests are in the verified log, after the scripted ones
    records = int(re.search(r"audit log: (\d+) records", rest).group(1))  # type: ignore[union-attr]
    assert records == len(SCENARIOS) + 5
    assert not work.exists()
