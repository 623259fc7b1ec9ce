"""The decision stage through the proxy: every malformed result is a deny
(`policy_result_invalid`, 403), an engine error is a 503, never an allow."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_harness import StartProxy, open_route

HEAD = "package ztproxy.authz\n\nimport rego.v1\n\n"


@pytest.mark.parametrize(
    "body",
    [
        'decision := "true"',
        "decision := 1",
        "decision := [true]",
        'decision := {"allow": true}',
        'decision := {"allowed": "true"}',
        'decision := {"allowed": true, "headers": "x"}',
        "decision if false",  # decision undefined (a missing decision rule is refused at load)
        'decision := true if input.request.method == "DELETE"',  # undefined for GET
    ],
)
async def test_invalid_results_deny(
    start_proxy: StartProxy, upstream: str, tmp_path: Path, body: str
) -> None:
    d = tmp_path / "bad-policy"
    d.mkdir()
    (d / "p.rego").write_text(HEAD + body + "\n")
    run = await start_proxy(routes=[open_route(upstream)], policy_dirs=[d])
    status, _, _ = await run.request("GET", "/payments/x")
    assert status == 403
    rec = (await run.records())[-1]
    assert (rec["decision"], rec["reason"]) == ("deny", "policy_result_invalid")


async def test_evaluation_error_is_503(
    start_proxy: StartProxy, upstream: str, tmp_path: Path
) -> None:
    d = tmp_path / "conflict"
    d.mkdir()
    # two complete-rule values for the same input: an evaluation error in OPA and regorus
    (d / "p.rego").write_text(
        HEAD + 'decision := true if input.request.method == "GET"\n'
        'decision := false if startswith(input.request.path, "/pay")\n'
    )
    run = await start_proxy(routes=[open_route(upstream)], policy_dirs=[d])
    status, _, body = await run.request("GET", "/payments/x")
    assert status == 503 and b"conflict" not in body
    rec = (await run.records())[-1]
    assert rec["decision"] == "deny" and rec["reason"].startswith("policy_")
    status, _, _ = await run.request("POST", "/other/x")  # no conflict here, but no route
    assert status == 404


async def test_boolean_true_and_false(
    start_proxy: StartProxy, upstream: str, tmp_path: Path
) -> None:
    d = tmp_path / "bool"
    d.mkdir()
    (d / "p.rego").write_text(
        HEAD + 'default decision := false\ndecision := true if input.request.method == "GET"\n'
    )
    run = await start_proxy(routes=[open_route(upstream)], policy_dirs=[d])
    assert (await run.request("GET", "/payments/x"))[0] == 200
    assert (await run.request("DELETE", "/payments/x"))[0] == 403
