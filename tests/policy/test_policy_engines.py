"""Both engines against the shared table, through the decider; they must agree.

The embedded engine runs the shipped policies in-process; the remote engine talks to a
stand-in OPA server on 127.0.0.1 (backed by regorus); a real `opa` binary is used when
one is on PATH (marker `opa`, skipped cleanly otherwise)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from policy_standin import StandInOpa
from policy_support import make_input
from policy_table import TABLE

from ztproxy.config.policy import PolicyConfig
from ztproxy.errors import ServiceUnavailable
from ztproxy.policy import build_decider
from ztproxy.seams import Decider

PATH = "ztproxy/authz/decision"


def _embedded_config(policies: Path, **kw: Any) -> PolicyConfig:
    return PolicyConfig(policy_dirs=(str(policies),), watch=False, **kw)


@pytest.fixture
async def embedded(policies_dir: Path) -> AsyncIterator[Decider]:
    d = build_decider(_embedded_config(policies_dir, cache_ttl_ms=0))
    await d.start()
    yield d
    await d.close()


@pytest.fixture
async def remote(standin: StandInOpa) -> AsyncIterator[Decider]:
    d = build_decider(
        PolicyConfig(engine="opa", opa_url=standin.url, cache_ttl_ms=0, timeout_ms=500)
    )
    await d.start()
    yield d
    await d.close()


@pytest.mark.parametrize(("name", "kw", "allowed", "reasons"), TABLE, ids=[t[0] for t in TABLE])
async def test_shared_table_embedded_and_remote_agree(
    embedded: Decider,
    remote: Decider,
    name: str,
    kw: dict[str, Any],
    allowed: bool,
    reasons: list[str],
) -> None:
    doc = make_input(**kw)
    local = await embedded.decide(PATH, doc)
    far = await remote.decide(PATH, doc)
    for decision in (local, far):
        assert decision.allowed is allowed, name
        assert list(decision.reasons) == reasons
        assert decision.reason == ("policy_allow" if allowed else "policy_deny")
        assert decision.http_status == (None if allowed else 403)
    assert local.policy_revision == embedded.revision != ""
    assert far.policy_revision.startswith("opa:http://127.0.0.1:")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def real_opa(policies_dir: Path) -> AsyncIterator[str]:
    opa = shutil.which("opa")
    if opa is None:
        pytest.skip("no opa binary on PATH")
    port = _free_port()
    # the policy ROOT, as the embedded engine loads it: OPA merges a data file at its
    # directory's path below the root, so segmentation/data.json must be read from
    # policies/ to land at data.ztproxy.segmentation (from policies/ztproxy it was
    # data.segmentation, and every case answered unknown_service)
    proc = subprocess.Popen(
        [opa, "run", "--server", "--addr", f"127.0.0.1:{port}", str(policies_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):  # bounded: 10 s at most
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.opa
async def test_shared_table_against_real_opa(real_opa: str, embedded: Decider) -> None:
    d = build_decider(PolicyConfig(engine="opa", opa_url=real_opa, cache_ttl_ms=0, timeout_ms=2000))
    await d.start()
    try:
        for name, kw, allowed, reasons in TABLE:
            doc = make_input(**kw)
            got = await d.decide(PATH, doc)
            assert (got.allowed, list(got.reasons)) == (allowed, reasons), name
            mine = await embedded.decide(PATH, doc)
            assert (got.allowed, got.reasons) == (mine.allowed, mine.reasons)
        bad = await d.decide("ztproxy/authz/nope", make_input())
        assert bad.reason == "policy_result_invalid"
    finally:
        await d.close()


@pytest.mark.opa
def test_shipped_rego_tests_pass_under_real_opa() -> None:
    opa = shutil.which("opa")
    if opa is None:
        pytest.skip("no opa binary on PATH")
    root = Path(__file__).resolve().parents[2] / "policies"
    done = subprocess.run([opa, "test", str(root)], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stdout.decode()[-2000:]


async def test_undefined_decision_is_invalid_on_both(embedded: Decider, remote: Decider) -> None:
    for d in (embedded, remote):
        got = await d.decide("ztproxy/authz/no_such_rule", make_input())
        assert (got.allowed, got.reason, got.http_status) == (False, "policy_result_invalid", 403)
        got = await d.decide("nothing/here", make_input())
        assert got.reason == "policy_result_invalid"


async def test_bad_decision_path_never_reaches_an_engine(embedded: Decider) -> None:
    with pytest.raises(ServiceUnavailable) as info:
        await embedded.decide("ztproxy/authz/decision; data", make_input())
    assert info.value.reason == "policy_engine_error"
