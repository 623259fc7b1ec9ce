"""The Pipeline with fake seams and no sockets (httpx MockTransport style): the order of
the stages, exactly one audit record however a request ends, and fail-closed outcomes.

The request is aiohttp's mocked request; the peer lookup, authenticator, decider and
audit sink are plain objects that record what they were asked."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDictProxy

from ztproxy.config.load import Config, parse_config
from ztproxy.errors import Forbidden, ServiceUnavailable, Unauthenticated
from ztproxy.metrics import Metrics
from ztproxy.model import AuditEvent, Credentials, Decision, PeerIdentity, Route
from ztproxy.outcome import Outcome
from ztproxy.pipeline import Pipeline
from ztproxy.runtime import Runtime, RuntimeRef, header_plan
from ztproxy.tls.trust import TrustStore

T0 = 1_800_000_000.0
PEER = PeerIdentity(
    spiffe_id="spiffe://corp.example/ns/prod/sa/checkout",
    trust_domain="corp.example",
    x5t_s256="x5t",
    fingerprint_sha256="ab" * 32,
    subject="CN=checkout",
    issuer="CN=ca",
    not_before=datetime(2026, 1, 1, tzinfo=UTC),
    not_after=datetime(2027, 1, 1, tzinfo=UTC),
)


class Calls(list[str]):
    pass


class FakePeers:
    def __init__(self, calls: Calls, fail: str | None = None) -> None:
        self.calls, self.fail = calls, fail

    def __call__(self, request: Any, trust: Any, now: float) -> PeerIdentity:
        self.calls.append("peer")
        if self.fail:
            raise Unauthenticated(self.fail)
        return PEER


class FakeAuthenticator:
    def __init__(self, calls: Calls, fail: Exception | None = None) -> None:
        self.calls, self.fail = calls, fail

    async def authenticate(
        self, headers: CIMultiDictProxy[str], raw_query: str, route: Route, peer: PeerIdentity
    ) -> Credentials:
        self.calls.append("authenticate")
        if self.fail:
            raise self.fail
        return Credentials()

    def credential_header_names(self) -> frozenset[str]:
        return frozenset({"authorization", "cookie"})

    def readiness(self) -> Mapping[str, bool]:
        return {}

    def stats(self) -> Mapping[str, float]:
        return {}

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class FakeDecider:
    def __init__(self, calls: Calls, answer: Decision | Exception) -> None:
        self.calls, self.answer = calls, answer
        self.inputs: list[Mapping[str, Any]] = []

    @property
    def revision(self) -> str:
        return "rev-1"

    async def decide(self, decision_path: str, input_doc: Mapping[str, Any]) -> Decision:
        self.calls.append("decide")
        self.inputs.append(input_doc)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def readiness(self) -> Mapping[str, bool]:
        return {}

    def stats(self) -> Mapping[str, float]:
        return {}

    async def reload(self) -> bool:
        return True

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class FakeAudit:
    def __init__(self, accepting: bool = True) -> None:
        self.events: list[AuditEvent] = []
        self._accepting = accepting

    def append(self, event: AuditEvent) -> None:
        self.events.append(event)

    def accepting(self) -> bool:
        return self._accepting

    def readiness(self) -> Mapping[str, bool]:
        return {}

    def stats(self) -> Mapping[str, float]:
        return {}

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def _config(tmp_path: Path) -> Config:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    for name in ("s.pem", "s.key", "ca.pem"):
        (tmp_path / name).write_text("x")
    (tmp_path / "k").write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "policies").mkdir(exist_ok=True)
    return parse_config(
        {
            "listener": {"cert_file": "s.pem", "key_file": "s.key"},
            "trust_domains": [{"name": "corp.example", "bundle_file": "ca.pem"}],
            "routes": [
                {
                    "name": "payments-api",
                    "service": "payments",
                    "path_prefix": "/payments",
                    "upstream": "http://127.0.0.1:9",
                    "user": "none",
                    "device": "none",
                }
            ],
            "audit": {"dir": str(tmp_path / "audit"), "signing_key": "k"},
            "policy": {"policy_dirs": ["policies"]},
        },
        str(tmp_path),
    )


DENY = Decision(False, "policy_deny")


def _pipeline(
    tmp_path: Path,
    *,
    decision: Decision | Exception = DENY,
    peer_fail: str | None = None,
    auth_fail: Exception | None = None,
    accepting: bool = True,
) -> tuple[Pipeline, Calls, FakeAudit]:
    calls = Calls()
    audit = FakeAudit(accepting)
    authenticator = FakeAuthenticator(calls, auth_fail)
    config = _config(tmp_path)
    runtime = RuntimeRef(
        Runtime(
            config=config,
            trust=TrustStore({}, ""),
            tls=None,
            upstream_ssl={},
            authenticator=authenticator,
            decider=FakeDecider(calls, decision),
            session=None,
            headers=header_plan(config, authenticator),
        )
    )
    outcome = Outcome(audit, Metrics(), revision=lambda: "rev-1", clock=lambda: T0)
    return (
        Pipeline(runtime, audit, FakePeers(calls, peer_fail), outcome, lambda: T0),
        calls,
        audit,
    )


def _request(path: str = "/payments/x") -> Any:
    return make_mocked_request("GET", path, headers={"Host": "api.example"})


async def test_stages_run_in_order_and_a_deny_is_audited_once(tmp_path: Path) -> None:
    pipeline, calls, audit = _pipeline(tmp_path)
    resp = await pipeline.handle(_request())
    assert resp.status == 403
    assert calls == ["peer", "authenticate", "decide"]
    [event] = audit.events
    assert (event.kind, event.decision, event.reason, event.status) == (
        "request",
        "deny",
        "policy_deny",
        403,
    )
    assert event.source_spiffe_id == PEER.spiffe_id and event.route == "payments-api"
    assert event.policy_input_sha256 and event.policy_revision == ""


@pytest.mark.parametrize(
    "case,status,reason,seen",
    [
        ("audit_down", 503, "audit_unavailable", []),
        ("peer", 401, "expired", ["peer"]),
        ("no_route", 404, "no_route", ["peer"]),
        ("auth", 401, "missing_token", ["peer", "authenticate"]),
        ("policy_down", 503, "policy_unavailable", ["peer", "authenticate", "decide"]),
        ("policy_bug", 500, "internal_error", ["peer", "authenticate", "decide"]),
        ("policy_403", 403, "policy_result_invalid", ["peer", "authenticate", "decide"]),
    ],
)
async def test_every_failure_denies_and_is_audited_once(
    tmp_path: Path, case: str, status: int, reason: str, seen: list[str]
) -> None:
    decision: Decision | Exception = Decision(True, "policy_allow")
    kwargs: dict[str, Any] = {}
    if case == "audit_down":
        kwargs["accepting"] = False
    elif case == "peer":
        kwargs["peer_fail"] = "expired"
    elif case == "auth":
        kwargs["auth_fail"] = Unauthenticated("missing_token")
    elif case == "policy_down":
        decision = ServiceUnavailable("policy_unavailable")
    elif case == "policy_bug":
        decision = RuntimeError("boom")
    elif case == "policy_403":
        decision = Forbidden("policy_result_invalid")
    pipeline, calls, audit = _pipeline(tmp_path, decision=decision, **kwargs)
    resp = await pipeline.handle(_request("/elsewhere" if case == "no_route" else "/payments/x"))
    assert resp.status == status
    assert calls == seen
    [event] = audit.events
    assert (event.decision, event.reason, event.status) == ("deny", reason, status)


async def test_a_request_keeps_the_runtime_it_started_under(tmp_path: Path) -> None:
    """A reload publishes a new runtime with one assignment; the request in flight
    finishes under the one it read at its start."""
    pipeline, calls, audit = _pipeline(tmp_path)
    ref = pipeline.runtime
    old = ref.current

    class Swapping(FakeDecider):
        async def decide(self, decision_path: str, input_doc: Mapping[str, Any]) -> Decision:
            ref.current = Runtime(
                config=old.config,
                trust=old.trust,
                tls=None,
                upstream_ssl={},
                authenticator=old.authenticator,
                decider=FakeDecider(calls, Decision(True, "x")),
                session=None,
                headers=old.headers,
                generation=1,
            )
            return await super().decide(decision_path, input_doc)

    ref.current = Runtime(
        config=old.config,
        trust=old.trust,
        tls=None,
        upstream_ssl={},
        authenticator=old.authenticator,
        decider=Swapping(calls, Decision(False, "policy_deny")),
        session=None,
        headers=old.headers,
    )
    resp = await pipeline.handle(_request())
    assert resp.status == 403 and audit.events[0].reason == "policy_deny"
    assert ref.current.generation == 1
