"""Each example that can run here: its config passes `check-config` after `certs init`,
the quickstart serves the README's requests with the shipped policies, the README
commands parse, the segmentation walkthrough's tests pass (and fail without its data),
and the auditor walkthrough's commands work against a demo audit log."""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from ztproxy.cli import build_parser
from ztproxy.config.load import load_config
from ztproxy.devtools.demo import find_policies, run_demo
from ztproxy.devtools.lab import start_app, upstream_app
from ztproxy.devtools.pki import DevPki
from ztproxy.server import Proxy

from .conftest import EXAMPLES, REPO, DemoRun, cli, sh_commands, ztproxy_invocations

CONFIG_EXAMPLES = ("quickstart", "sidecar-remote-opa")


def _install(example: str, tmp: Path, **patch: Any) -> Path:
    """The example's config in `tmp` beside `certs/dev` (made by `certs init`), with the
    policy path pointed at the repo's policies/ and `patch` applied on top."""
    done = cli("certs", "init", "--out", str(tmp / "certs/dev"))
    assert done.returncode == 0, done.stderr
    raw = yaml.safe_load((EXAMPLES / example / "config.yaml").read_text())
    policy = raw.setdefault("policy", {})
    if "policy_dirs" in policy:
        policy["policy_dirs"] = [str(REPO / "policies")]
    for section, values in patch.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("example", CONFIG_EXAMPLES)
def test_example_config_checks(example: str, tmp_path: Path) -> None:
    text = (EXAMPLES / example / "config.yaml").read_text()
    if "policy_dirs" in text:  # the relative path the README relies on is right
        assert "../../policies" in text and (EXAMPLES / example / "../../policies").is_dir()
    config = _install(example, tmp_path)
    done = cli("check-config", "--config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{config}: OK" in done.stdout


def test_check_config_catches_missing_certs(tmp_path: Path) -> None:
    """The check above can fail: without `certs init` the example does not load."""
    shutil.copy(EXAMPLES / "quickstart" / "config.yaml", tmp_path / "config.yaml")
    done = cli("check-config", "--config", str(tmp_path / "config.yaml"))
    assert done.returncode == 1
    assert "listener.cert_file" in done.stderr


async def test_quickstart_serves_the_readme_requests(tmp_path: Path) -> None:
    runners = [await start_app(upstream_app(name)) for name in ("payments", "reports")]
    try:
        routes = yaml.safe_load((EXAMPLES / "quickstart" / "config.yaml").read_text())["routes"]
        for route, (_, port) in zip(routes, runners, strict=True):
            route["upstream"] = f"http://127.0.0.1:{port}"
        path = _install(
            "quickstart", tmp_path, listener={"port": 0}, admin={"port": 0}, routes=routes
        )
        proxy = Proxy(load_config(str(path)))
        await proxy.start()
        try:
            statuses = await _readme_requests(tmp_path, proxy.port)
        finally:
            await proxy.stop()
    finally:
        for runner, _ in runners:
            await runner.cleanup()
    assert statuses == {
        "allowed": 200,
        "segmentation": 403,
        "no user token": 401,
        "other certificate": 401,
    }
    verify = cli(
        "audit",
        "verify",
        str(tmp_path / "audit-log"),
        "--key",
        str(tmp_path / "certs/dev/audit/audit-public.pem"),
    )
    assert verify.returncode == 0, verify.stdout


async def _readme_requests(tmp: Path, port: int) -> dict[str, int]:
    """The quickstart README's tokens (minted with its exact commands) and requests."""
    commands = sh_commands((EXAMPLES / "quickstart" / "README.md").read_text())
    mints = [c for c in ztproxy_invocations(commands) if c.startswith("ztproxy token mint")]
    assert len(mints) == 2
    with contextlib.chdir(tmp):  # the README's paths are relative to the example
        user, device = (cli(*shlex.split(c)[1:]).stdout.strip() for c in mints)
    assert user.count(".") == 2 and device.count(".") == 2

    def tls(workload: str) -> ssl.SSLContext:  # curl --cacert --cert --key
        ctx = ssl.create_default_context(cafile=str(tmp / "certs/dev/ca.pem"))
        ctx.load_cert_chain(
            tmp / f"certs/dev/workloads/{workload}.pem", tmp / f"certs/dev/workloads/{workload}.key"
        )
        return ctx

    both = {"Authorization": f"Bearer {user}", "Device-Authorization": f"Bearer {device}"}
    cases = {
        "allowed": ("checkout", "/api/v1/charges", both),
        "segmentation": ("checkout", "/reports/daily", both),
        "no user token": (
            "checkout",
            "/api/v1/charges",
            {"Device-Authorization": both["Device-Authorization"]},
        ),
        "other certificate": ("batch", "/api/v1/charges", both),
    }
    out = {}
    async with aiohttp.ClientSession() as session:
        for name, (workload, target, headers) in cases.items():
            async with session.get(
                f"https://localhost:{port}{target}", headers=headers, ssl=tls(workload)
            ) as resp:
                out[name] = resp.status
    return out


@pytest.mark.parametrize(
    "example", ["quickstart", "sidecar-remote-opa", "segmentation", "auditors"]
)
def test_readme_commands_parse(example: str) -> None:
    """Every `ztproxy ...` a README tells people to type is a valid command line."""
    invocations = ztproxy_invocations(sh_commands((EXAMPLES / example / "README.md").read_text()))
    assert invocations
    parser = build_parser()
    for command in invocations:
        args = parser.parse_args(shlex.split(command)[1:])
        assert callable(args.func), command


def _policy_copy(tmp: Path, *, with_service: bool) -> Path:
    root = tmp / "zt-policies"
    shutil.copytree(REPO / "policies", root)
    if with_service:
        data_file = root / "ztproxy" / "segmentation" / "data.json"
        data = json.loads(data_file.read_text())
        data["services"]["inventory"] = json.loads(
            (EXAMPLES / "segmentation" / "inventory.service.json").read_text()
        )
        data_file.write_text(json.dumps(data, indent=2))
    shutil.copy(EXAMPLES / "segmentation" / "inventory_test.rego", root / "ztproxy")
    return root


async def test_segmentation_walkthrough(tmp_path: Path, demo_pki: DevPki) -> None:
    root = _policy_copy(tmp_path, with_service=True)
    done = cli("policy", "test", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("inventory_test.test_") == 6
    assert "FAIL" not in done.stdout
    # `ztproxy demo --policies DIR`: the existing services still answer as before
    report = await run_demo(demo_pki, tmp_path / "audit", find_policies(root))
    assert report.ok


def test_segmentation_tests_fail_without_the_service(tmp_path: Path) -> None:
    root = _policy_copy(tmp_path, with_service=False)
    done = cli("policy", "test", str(root))
    assert done.returncode == 1
    assert "inventory_test.test_payments_posts_items: FAIL" in done.stdout


async def test_auditor_walkthrough(demo_run: DemoRun, tmp_path: Path) -> None:
    """The README's commands, with /tmp/zt-audit replaced by a demo log."""
    d, key = str(demo_run.audit_dir), str(demo_run.public_key)
    verify = cli("audit", "verify", d, "--key", key)
    assert verify.returncode == 0 and "summary: VALID" in verify.stdout
    shown = cli("audit", "show", d, "--key", key, "--decision", "deny")
    assert shown.returncode == 0
    assert "policy_deny" in shown.stdout and "policy_allow" not in shown.stdout
    as_json = cli("audit", "show", d, "--reason", "policy_deny", "--json")
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert len(rows) == 4 and {r["reason"] for r in rows} == {"policy_deny"}
    intruder = cli(
        "audit", "show", d, "--json", "--source", "spiffe://corp.example/ns/dev/sa/intruder"
    )
    assert len(intruder.stdout.splitlines()) == 1

    proof = tmp_path / "proof-2.json"
    made = cli("audit", "proof", d, "--seq", "2", "--key", key, "--out", str(proof))
    assert made.returncode == 0, made.stderr
    checked = cli("audit", "verify-proof", str(proof), "--key", key)
    assert checked.returncode == 0 and checked.stdout.startswith("valid")

    cp = tmp_path / "zt-checkpoint.txt"
    assert cli("audit", "checkpoint", d, "--key", key, "--out", str(cp)).returncode == 0
    trusted = cli("audit", "verify", d, "--key", key, "--trusted-checkpoint", str(cp))
    assert trusted.returncode == 0, trusted.stdout

    tampered = tmp_path / "zt-tampered"
    shutil.copytree(demo_run.audit_dir, tampered)
    segment = tampered / "w0-000001.jsonl"
    lines = segment.read_text().splitlines(keepends=True)
    assert '"user_subject":"alice"' in lines[2]  # the README's `sed '3s/...'` target
    lines[2] = lines[2].replace('"user_subject":"alice"', '"user_subject":"mallory"')
    segment.write_text("".join(lines))
    bad = cli("audit", "verify", str(tampered), "--key", key)
    assert bad.returncode == 1
    assert "INVALID: modified at seq 2" in bad.stdout
