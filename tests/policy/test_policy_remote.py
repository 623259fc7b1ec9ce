"""The remote engine against a stand-in OPA (127.0.0.1): every failure is fail-closed.

Covers OPA slower than the deadline, 500, garbage body, connection reset, OPA down, an
HTTP error carrying `true`, the circuit breaker through real failures, a bearer token
read from a file, and OPA over TLS with a private CA (our extension of AsyncOpaClient).
"""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import pytest
import trustme
from policy_standin import StandInOpa
from policy_support import make_input

from ztproxy.config.policy import PolicyConfig
from ztproxy.errors import ServiceUnavailable
from ztproxy.policy import build_decider

PATH = "ztproxy/authz/decision"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _config(url: str, **kw: object) -> PolicyConfig:
    base: dict[str, object] = {
        "engine": "opa",
        "opa_url": url,
        "timeout_ms": 200,
        "cache_ttl_ms": 0,
    }
    base.update(kw)
    return PolicyConfig(**base)  # type: ignore[arg-type]


async def _reason(decider: object, doc: dict[str, object] | None = None) -> str:
    with pytest.raises(ServiceUnavailable) as info:
        await decider.decide(PATH, doc or make_input())  # type: ignore[attr-defined]
    assert info.value.status == 503
    return str(info.value.reason)


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("500", "policy_engine_error"),
        ("garbage", "policy_engine_error"),
        ("array", "policy_engine_error"),
        ("reset", "policy_unavailable"),
    ],
)
async def test_failure_modes_fail_closed(standin: StandInOpa, mode: str, reason: str) -> None:
    d = build_decider(_config(standin.url))
    await d.start()
    try:
        assert (await d.decide(PATH, make_input())).allowed
        standin.mode = mode
        assert await _reason(d) == reason
        assert d.stats()["policy_errors"] == 1
    finally:
        await d.close()


async def test_slower_than_deadline_is_a_timeout_within_the_deadline(standin: StandInOpa) -> None:
    standin.mode, standin.delay = "slow", 2.0
    d = build_decider(_config(standin.url, timeout_ms=150))
    await d.start()
    try:
        started = time.monotonic()
        assert await _reason(d) == "policy_timeout"
        assert time.monotonic() - started < 0.6
        assert standin.calls == 1  # retries are off: one try inside the deadline
    finally:
        await d.close()


async def test_opa_down_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = build_decider(_config(f"http://127.0.0.1:{port}"))
    await d.start()
    try:
        assert await _reason(d) == "policy_unavailable"
    finally:
        await d.close()


async def test_http_error_carrying_true_is_an_invalid_result(standin: StandInOpa) -> None:
    standin.mode = "error_with_true"
    d = build_decider(_config(standin.url))
    await d.start()
    try:
        got = await d.decide(PATH, make_input())
        assert (got.allowed, got.reason, got.http_status) == (False, "policy_result_invalid", 403)
    finally:
        await d.close()


async def test_not_started_is_unavailable(standin: StandInOpa) -> None:
    d = build_decider(_config(standin.url))
    assert await _reason(d) == "policy_unavailable"


async def test_breaker_opens_after_n_failures_and_closes_after_cooldown(
    standin: StandInOpa,
) -> None:
    clock = FakeClock()
    d = build_decider(
        _config(standin.url, breaker_failures=3, breaker_cooldown_ms=5000), clock=clock
    )
    await d.start()
    try:
        standin.mode = "500"
        for _ in range(3):
            assert await _reason(d) == "policy_engine_error"
        assert d.readiness()["policy_breaker_closed"] is False
        calls = standin.calls
        standin.mode = "normal"  # OPA is back, but the breaker does not ask yet
        assert await _reason(d) == "policy_circuit_open"
        assert standin.calls == calls
        clock.now += 4.9
        assert await _reason(d) == "policy_circuit_open"
        clock.now += 0.2  # cool-down over: one probe goes out and closes the circuit
        assert (await d.decide(PATH, make_input())).allowed
        assert standin.calls == calls + 1
        assert d.readiness()["policy_breaker_closed"] is True
        assert d.stats()["policy_breaker_open"] == 0.0
    finally:
        await d.close()


async def test_failed_probe_reopens_for_another_cooldown(standin: StandInOpa) -> None:
    clock = FakeClock()
    d = build_decider(
        _config(standin.url, breaker_failures=1, breaker_cooldown_ms=1000), clock=clock
    )
    await d.start()
    try:
        standin.mode = "500"
        assert await _reason(d) == "policy_engine_error"
        clock.now += 1.0
        assert await _reason(d) == "policy_engine_error"  # the probe, failing
        assert await _reason(d) == "policy_circuit_open"
    finally:
        await d.close()


async def test_bearer_token_from_file_and_tls_with_private_ca(
    tmp_path: Path, policies_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    token_file = tmp_path / "opa-token"
    token_file.write_text("s3cret-token\n")
    server = StandInOpa([str(policies_dir)], ssl_context=server_ctx)
    await server.start()
    try:
        d = build_decider(
            _config(
                server.url,
                opa_ca_file=str(ca_file),
                opa_token_file=str(token_file),
                timeout_ms=2000,
            )
        )
        await d.start()
        try:
            assert (await d.decide(PATH, make_input())).allowed
            assert server.seen_auth == ["Bearer s3cret-token"]
        finally:
            await d.close()
        # without our CA the system store does not trust the server: fail closed
        d = build_decider(_config(server.url, timeout_ms=2000))
        await d.start()
        try:
            assert await _reason(d) == "policy_unavailable"
        finally:
            await d.close()
    finally:
        await server.close()
    captured = capsys.readouterr()
    assert "s3cret" not in captured.out + captured.err  # the token never reaches a log
