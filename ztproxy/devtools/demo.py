"""`ztproxy demo`: the whole proxy on one machine, driven by a scripted set of requests.

Stage: none (tooling over the real parts). `SCENARIOS` is the script; `prepare_demo` writes
a dev PKI into a directory; `run_demo` starts a `demo_lab.DemoLab` (two example upstreams
and the real proxy on 127.0.0.1), sends every scenario over real mutual TLS
(`run_scenarios`), stops everything, then joins each answer with its audit record
(`read_audit` / `match_outcomes`: by request id, or the TLS rejection by order) and checks
the log offline (`verify_audit`); it returns a `DemoReport`.

Trusts its own PKI only. Tokens are minted in `demo_lab` and travel in headers; they are
never printed (the `--keep` mode writes them to 0600 files for curl) and never logged.
The lab's names (`DemoLab`, `Tokens`, `Sent`, `audit_key`, ...) are re-exported here.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..audit.keys import load_public_key
from ..audit.segment import SEGMENT_RE
from ..audit.verify import verify_directory
from .demo_lab import (
    DEVICE_HEADER,
    DemoLab,
    Sent,
    Tokens,
    audit_key,
    demo_config,
    raw_request,
    workload_name,
)
from .lab import REPO_POLICIES
from .pki import DevPki, init_dev_pki

__all__ = [
    "DEMO_WORKLOADS",
    "DEVICE_HEADER",
    "SCENARIOS",
    "AuditVerdict",
    "DemoLab",
    "DemoReport",
    "OnReady",
    "Outcome",
    "Scenario",
    "Sent",
    "Tokens",
    "audit_key",
    "demo_config",
    "find_policies",
    "match_outcomes",
    "prepare_demo",
    "raw_request",
    "read_audit",
    "run_demo",
    "run_scenarios",
    "verify_audit",
    "wait_for_records",
    "workload_name",
]

DEMO_WORKLOADS = ("checkout", "reports", "batch", "dev/intruder")
_GOOD_LAPTOP: Mapping[str, Any] = {"trust_level": 3, "managed": True}


@dataclass(frozen=True, slots=True)
class Scenario:
    """One scripted request. `device_bound_to` names the workload whose certificate the
    device token is bound to (the caller's own by default); `user_age` > 0 mints the user
    token that many seconds in the past (expired when older than its ttl); `raw` sends
    the request byte for byte over a TLS stream."""

    label: str
    workload: str | None
    user: str | None
    device: str | None
    method: str
    path: str
    expect_status: int | None  # None: the TLS handshake is refused, no HTTP answer
    expect_reason: str
    roles: tuple[str, ...] = ("payments-operator",)
    device_claims: Mapping[str, Any] = field(default_factory=lambda: dict(_GOOD_LAPTOP))
    device_bound_to: str | None = None
    user_age: int = 0
    raw: bool = False

    @property
    def request(self) -> str:
        return f"{self.method} {self.path}"


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "allowed", "checkout", "alice", "laptop-1", "GET", "/api/v1/charges", 200, "policy_allow"
    ),
    Scenario(
        "allowed",
        "batch",
        "bob",
        "desktop-7",
        "GET",
        "/reports/daily",
        200,
        "policy_allow",
        roles=("analyst",),
        device_claims={"trust_level": 2, "managed": True},
    ),
    Scenario(
        "segmentation",
        "dev/intruder",
        "alice",
        "laptop-1",
        "POST",
        "/api/v1/charges",
        403,
        "source_not_allowed",
    ),
    Scenario(
        "segmentation",
        "reports",
        "carol",
        "laptop-3",
        "GET",
        "/api/v1/refunds",
        403,
        "path_not_allowed",
        roles=("payments-admin",),
    ),
    Scenario(
        "user role",
        "checkout",
        "dave",
        "laptop-4",
        "GET",
        "/api/v1/charges",
        403,
        "user_role_missing",
        roles=("analyst",),
    ),
    Scenario(
        "device posture",
        "checkout",
        "alice",
        "byod-9",
        "GET",
        "/api/v1/charges",
        403,
        "device_trust_level_too_low",
        device_claims={"trust_level": 1, "managed": False},
    ),
    Scenario(
        "stolen device token",
        "checkout",
        "alice",
        "laptop-5",
        "GET",
        "/api/v1/charges",
        401,
        "cert_binding_mismatch",
        device_bound_to="batch",
    ),
    Scenario(
        "no client cert", None, None, None, "GET", "/api/v1/charges", None, "no_client_certificate"
    ),
    Scenario(
        "expired token",
        "checkout",
        "alice",
        "laptop-1",
        "GET",
        "/api/v1/charges",
        401,
        "expired",
        user_age=3600,
    ),
    Scenario(
        "path traversal",
        "checkout",
        "alice",
        "laptop-1",
        "GET",
        "/api/v1/charges/../../../reports/daily",
        400,
        "dot_segment",
        raw=True,
    ),
)


def find_policies(explicit: str | Path | None = None) -> Path:
    """The policy root: `explicit`, else the repo's policies/ next to the package, else a
    copy shipped inside the package (ztproxy/_policies, when packaged that way)."""
    candidates = (
        [Path(explicit)]
        if explicit
        else [REPO_POLICIES, Path(__file__).resolve().parent.parent / "_policies"]
    )
    for path in candidates:
        if path.is_dir() and any(path.rglob("*.rego")):
            return path
    raise FileNotFoundError("no Rego policies found in " + ", ".join(map(str, candidates)))


def prepare_demo(workdir: Path) -> DevPki:
    """A dev PKI for the demo workloads (blocking: call before the loop or in a thread)."""
    return init_dev_pki(workdir / "pki", workloads=DEMO_WORKLOADS)


async def run_scenarios(
    lab: DemoLab, tokens: Tokens, scenarios: Sequence[Scenario] = SCENARIOS
) -> list[Sent]:
    return [await lab.send(s, tokens) for s in scenarios]


# -- joining answers with the audit log, and verifying it ------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """A scenario, what the client saw, and what the audit record says about it."""

    scenario: Scenario
    status: int | None
    request_id: str | None
    decision: str  # "allow" | "deny" from the audit record, "-" when none matched
    reason: str  # the record's reason code
    policy_reasons: tuple[str, ...] = ()

    @property
    def expected(self) -> bool:
        return self.status == self.scenario.expect_status

    @property
    def reasons(self) -> tuple[str, ...]:
        return (self.reason, *self.policy_reasons)


@dataclass(frozen=True, slots=True)
class AuditVerdict:
    ok: bool
    lines: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DemoReport:
    outcomes: tuple[Outcome, ...]
    verdict: AuditVerdict
    audit_dir: Path
    records: int

    @property
    def ok(self) -> bool:
        return self.verdict.ok and all(o.expected for o in self.outcomes)


def read_audit(audit_dir: Path) -> list[dict[str, Any]]:
    """Every record of every segment, in file order (blocking: run in a thread)."""
    out: list[dict[str, Any]] = []
    for path in sorted(p for p in audit_dir.iterdir() if SEGMENT_RE.match(p.name)):
        for line in path.read_text("utf-8").splitlines():
            if line.strip():
                out.append(json.loads(line))
    return out


def match_outcomes(sent: Sequence[Sent], records: Sequence[Mapping[str, Any]]) -> list[Outcome]:
    """By request id; a refused handshake takes the next unclaimed `tls_rejected`."""
    by_id = {r.get("request_id"): r for r in records if r.get("kind") == "request"}
    rejected = iter([r for r in records if r.get("kind") == "tls_rejected"])
    out = []
    for item in sent:
        rec: Mapping[str, Any] | None = by_id.get(item.request_id) if item.request_id else None
        if rec is None and item.status is None:
            rec = next(rejected, None)
        out.append(
            Outcome(
                item.scenario,
                item.status,
                item.request_id or (rec or {}).get("request_id"),
                str(rec["decision"]) if rec else "-",
                str(rec["reason"]) if rec else "not audited",
                tuple(rec.get("policy_reasons") or ()) if rec else (),
            )
        )
    return out


async def wait_for_records(
    audit_dir: Path, sent: Sequence[Sent], *, attempts: int = 60, interval: float = 0.05
) -> list[dict[str, Any]]:
    """The records so far, once every answered request's record is on disk (bounded)."""
    wanted = {s.request_id for s in sent if s.request_id}
    records: list[dict[str, Any]] = []
    for _ in range(attempts):
        records = await asyncio.to_thread(read_audit, audit_dir)
        if wanted <= {r.get("request_id") for r in records}:
            break
        await asyncio.sleep(interval)
    return records


def verify_audit(audit_dir: Path, public_key: Path) -> AuditVerdict:
    """Offline verification with the public key only, as `ztproxy audit verify` does."""
    report = verify_directory(audit_dir, [load_public_key(public_key)])
    return AuditVerdict(report.valid, tuple(report.to_text().splitlines()))


OnReady = Callable[[DemoLab, Sequence[Outcome]], Awaitable[None]]


async def run_demo(
    pki: DevPki,
    audit_dir: Path,
    policies: Path,
    *,
    clock: Callable[[], float] = time.time,
    scenarios: Sequence[Scenario] = SCENARIOS,
    on_ready: OnReady | None = None,
) -> DemoReport:
    """Start everything, send the scenarios, stop everything, then join and verify.

    `on_ready(lab, outcomes)` (the `--keep` mode) is awaited while everything still
    runs; the proxy stops when it returns."""
    lab = DemoLab(pki, audit_dir, policies, admin=on_ready is not None, clock=clock)
    tokens = await asyncio.to_thread(Tokens, pki, clock)
    try:
        await lab.start()
        sent = await run_scenarios(lab, tokens, scenarios)
        if on_ready is not None:
            early = match_outcomes(sent, await wait_for_records(audit_dir, sent))
            await on_ready(lab, early)
    finally:
        await lab.stop()
    records = await asyncio.to_thread(read_audit, audit_dir)
    verdict = await asyncio.to_thread(verify_audit, audit_dir, audit_key(pki))
    return DemoReport(tuple(match_outcomes(sent, records)), verdict, audit_dir, len(records))
