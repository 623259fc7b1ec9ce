"""`ztproxy demo`: the whole proxy on one machine, driven by a scripted set of requests.

Stage: none (tooling over the real parts). `prepare_demo` writes a dev PKI into a
directory; `DemoLab` starts two example upstreams (payments, reports) and the real proxy
(TLS acceptor, token verifier, embedded Rego over the shipped policies, signed audit log)
on 127.0.0.1, port 0; `run_scenarios` sends `SCENARIOS` over real mutual TLS (the path
traversal raw, over an asyncio TLS stream, since client libraries normalize `..`) and
returns what came back; `read_audit` / `match_outcomes` join each answer with its audit
record (by request id, or the TLS rejection by order); `verify_audit` checks the log.

Trusts its own PKI only. Tokens are minted here and travel in headers; they are never
printed (the `--keep` mode writes them to 0600 files for curl) and never logged.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from ..audit.keys import PRIVATE_FILE, PUBLIC_FILE, load_public_key
from ..audit.segment import SEGMENT_RE
from ..audit.verify import verify_directory
from ..config.load import Config, parse_config
from ..server import Proxy
from .lab import REPO_POLICIES, client_context, proxy_config, start_app, upstream_app
from .mint import load_private_key, mint_token
from .pki import DevPki, init_dev_pki

DEVICE_HEADER = "Device-Authorization"
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
    Scenario("allowed", "checkout", "alice", "laptop-1", "GET", "/api/v1/charges",
             200, "policy_allow"),
    Scenario("allowed", "batch", "bob", "desktop-7", "GET", "/reports/daily",
             200, "policy_allow", roles=("analyst",),
             device_claims={"trust_level": 2, "managed": True}),
    Scenario("segmentation", "dev/intruder", "alice", "laptop-1", "POST", "/api/v1/charges",
             403, "source_not_allowed"),
    Scenario("segmentation", "reports", "carol", "laptop-3", "GET", "/api/v1/refunds",
             403, "path_not_allowed", roles=("payments-admin",)),
    Scenario("user role", "checkout", "dave", "laptop-4", "GET", "/api/v1/charges",
             403, "user_role_missing", roles=("analyst",)),
    Scenario("device posture", "checkout", "alice", "byod-9", "GET", "/api/v1/charges",
             403, "device_trust_level_too_low",
             device_claims={"trust_level": 1, "managed": False}),
    Scenario("stolen device token", "checkout", "alice", "laptop-5", "GET", "/api/v1/charges",
             401, "cert_binding_mismatch", device_bound_to="batch"),
    Scenario("no client cert", None, None, None, "GET", "/api/v1/charges",
             None, "no_client_certificate"),
    Scenario("expired token", "checkout", "alice", "laptop-1", "GET", "/api/v1/charges",
             401, "expired", user_age=3600),
    Scenario("path traversal", "checkout", "alice", "laptop-1", "GET",
             "/api/v1/charges/../../../reports/daily", 400, "dot_segment", raw=True),
)


def workload_name(entry: str) -> str:
    return entry.rpartition("/")[2]


def find_policies(explicit: str | Path | None = None) -> Path:
    """The policy root: `explicit`, else the repo's policies/ next to the package, else a
    copy shipped inside the package (ztproxy/_policies, when packaged that way)."""
    candidates = [Path(explicit)] if explicit else [
        REPO_POLICIES, Path(__file__).resolve().parent.parent / "_policies"]
    for path in candidates:
        if path.is_dir() and any(path.rglob("*.rego")):
            return path
    raise FileNotFoundError("no Rego policies found in " + ", ".join(map(str, candidates)))


def prepare_demo(workdir: Path) -> DevPki:
    """A dev PKI for the demo workloads (blocking: call before the loop or in a thread)."""
    return init_dev_pki(workdir / "pki", workloads=DEMO_WORKLOADS)


def demo_config(pki: DevPki, upstreams: Mapping[str, str], audit_dir: Path, policies: Path,
                *, admin: bool = False) -> dict[str, Any]:
    """The config (as the YAML would parse): /api/v1 -> payments, /reports -> reports."""
    routes = [
        {"name": "payments-api", "service": "payments", "path_prefix": "/api/v1",
         "upstream": upstreams["payments"]},
        # The shipped data does not require reports' device tokens to be bound.
        {"name": "reports-api", "service": "reports", "path_prefix": "/reports",
         "upstream": upstreams["reports"], "device_binding": "relaxed"},
    ]
    # Policies and data under one root, as `opa run policies/` loads them.
    policy = {"policy_dirs": [str(policies)], "data_dirs": [], "watch": False}
    return proxy_config(pki, upstreams=upstreams, audit_dir=audit_dir, routes=routes,
                        policy=policy, admin_port=0 if admin else None,
                        extra={"audit": {"dir": str(audit_dir),
                                         "signing_key": str(audit_key(pki, PRIVATE_FILE)),
                                         "checkpoint_interval_seconds": 1.0}})


def audit_key(pki: DevPki, name: str = PUBLIC_FILE) -> Path:
    """The dev PKI's audit key file: the public key by default, PRIVATE_FILE for the proxy."""
    if pki.audit_dir is None:
        raise RuntimeError("the dev PKI has no audit key")
    return pki.audit_dir / name


class Tokens:
    """Mints the user and device tokens a scenario carries (keys loaded once)."""

    def __init__(self, pki: DevPki, clock: Callable[[], float] = time.time) -> None:
        self.pki = pki
        self.clock = clock
        self._user_key = load_private_key(pki.user_key)
        self._device_key = load_private_key(pki.device_key)

    def user(self, subject: str, roles: Sequence[str], *, age: int = 0,
             ttl: int = 600) -> str:
        return mint_token(key=self._user_key, kid=self.pki.user_kid,
                          issuer=self.pki.user_issuer, audience=self.pki.audience,
                          subject=subject, claims={"roles": list(roles)}, ttl=ttl,
                          now=int(self.clock()) - age)

    def device(self, device_id: str, bound_to: str, claims: Mapping[str, Any], *,
               ttl: int = 600) -> str:
        cert = self.pki.workloads[workload_name(bound_to)][0].read_bytes()
        return mint_token(key=self._device_key, kid=self.pki.device_kid,
                          issuer=self.pki.device_issuer, audience=self.pki.audience,
                          subject=device_id, claims=dict(claims), bind_cert=cert, ttl=ttl,
                          now=int(self.clock()))

    def headers(self, s: Scenario) -> dict[str, str]:
        out: dict[str, str] = {}
        if s.user is not None:
            out["Authorization"] = "Bearer " + self.user(s.user, s.roles, age=s.user_age)
        if s.device is not None and s.workload is not None:
            bound = s.device_bound_to or s.workload
            out[DEVICE_HEADER] = "Bearer " + self.device(s.device, bound, s.device_claims)
        return out


@dataclass(frozen=True, slots=True)
class Sent:
    """What came back for one scenario: the status (None when the handshake was
    refused) and the request id the proxy gave it (from the error body or the
    upstream's echo of the asserted x-request-id header)."""

    scenario: Scenario
    status: int | None
    request_id: str | None


class DemoLab:
    """Owns the upstreams and the proxy. `start()` then `stop()` (always, in finally)."""

    def __init__(self, pki: DevPki, audit_dir: Path, policies: Path, *,
                 admin: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.pki, self.audit_dir, self.policies = pki, audit_dir, policies
        self.admin, self.clock = admin, clock
        self.runners: list[web.AppRunner] = []
        self.proxy: Proxy | None = None
        self.config: Config | None = None

    @property
    def port(self) -> int:
        assert self.proxy is not None
        return self.proxy.port

    @property
    def base_url(self) -> str:
        return f"https://localhost:{self.port}"

    async def start(self) -> None:
        upstreams: dict[str, str] = {}
        for name in ("payments", "reports"):
            runner, port = await start_app(upstream_app(name))
            self.runners.append(runner)
            upstreams[name] = f"http://127.0.0.1:{port}"
        raw = demo_config(self.pki, upstreams, self.audit_dir, self.policies,
                          admin=self.admin)
        self.config = parse_config(raw, str(self.pki.root))
        self.proxy = Proxy(self.config, clock=self.clock)
        await self.proxy.start()

    async def stop(self) -> None:
        if self.proxy is not None and not self.proxy.stopping:
            await self.proxy.stop()
        for runner in self.runners:
            await runner.cleanup()
        self.runners.clear()

    async def send(self, s: Scenario, tokens: Tokens, timeout: float = 5.0) -> Sent:
        ctx = client_context(self.pki, workload_name(s.workload) if s.workload else None)
        headers = tokens.headers(s)
        if s.raw or s.workload is None:  # one attempt: client libraries retry
            status, body = await raw_request(self.port, ctx, s.method, s.path, headers,
                                             timeout)
            return Sent(s, status, _request_id(body))
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)
                                             ) as session:
                async with session.request(s.method, self.base_url + s.path,
                                           headers=headers, ssl=ctx) as resp:
                    body = await resp.read()
                    return Sent(s, resp.status, _request_id(body))
        except (aiohttp.ClientError, ssl.SSLError, OSError, TimeoutError):
            return Sent(s, None, None)


async def run_scenarios(lab: DemoLab, tokens: Tokens,
                        scenarios: Sequence[Scenario] = SCENARIOS) -> list[Sent]:
    return [await lab.send(s, tokens) for s in scenarios]


async def raw_request(port: int, ctx: ssl.SSLContext, method: str, target: str,
                      headers: Mapping[str, str], timeout: float) -> tuple[int | None, bytes]:
    """One HTTP/1.1 request written byte for byte (no normalization); (status, body)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: localhost:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname="localhost")
            try:
                writer.write(data)
                await writer.drain()
                reply = await reader.read(256 * 1024)  # one answer, Connection: close
                while len(reply) < 256 * 1024 and (chunk := await reader.read(65536)):
                    reply += chunk
            finally:
                writer.close()
    except (OSError, ssl.SSLError, TimeoutError):
        return None, b""
    head, _, body = reply.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return status, body


def _request_id(body: bytes) -> str | None:
    """From the proxy's error body, or the example upstream's echo of x-request-id."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    if isinstance(doc.get("request_id"), str):
        return str(doc["request_id"])
    for pair in doc.get("headers", []):  # the example upstream echoes what it received
        if isinstance(pair, list) and len(pair) == 2 and str(pair[0]).lower() == "x-request-id":
            return str(pair[1])
    return None


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


def match_outcomes(sent: Sequence[Sent], records: Sequence[Mapping[str, Any]]
                   ) -> list[Outcome]:
    """By request id; a refused handshake takes the next unclaimed `tls_rejected`."""
    by_id = {r.get("request_id"): r for r in records if r.get("kind") == "request"}
    rejected = iter([r for r in records if r.get("kind") == "tls_rejected"])
    out = []
    for item in sent:
        rec: Mapping[str, Any] | None = by_id.get(item.request_id) if item.request_id else None
        if rec is None and item.status is None:
            rec = next(rejected, None)
        out.append(Outcome(
            item.scenario, item.status, item.request_id or (rec or {}).get("request_id"),
            str(rec["decision"]) if rec else "-", str(rec["reason"]) if rec else "not audited",
            tuple(rec.get("policy_reasons") or ()) if rec else ()))
    return out


async def wait_for_records(audit_dir: Path, sent: Sequence[Sent], *, attempts: int = 60,
                           interval: float = 0.05) -> list[dict[str, Any]]:
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


async def run_demo(pki: DevPki, audit_dir: Path, policies: Path, *,
                   clock: Callable[[], float] = time.time,
                   scenarios: Sequence[Scenario] = SCENARIOS,
                   on_ready: OnReady | None = None) -> DemoReport:
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
