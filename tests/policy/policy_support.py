"""Builders of real model values for the policy tests (imported by name: a module
called conftest would clash with the other test folders' conftest modules)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from ztproxy.model import (  # noqa: E402
    Credentials,
    PeerIdentity,
    Principal,
    RequestFacts,
    Route,
)
from ztproxy.stages.policy_input import build_policy_input  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "policies"
TD = "spiffe://corp.example/ns"


def peer(spiffe_id: str = f"{TD}/prod/sa/checkout") -> PeerIdentity:
    return PeerIdentity(
        spiffe_id=spiffe_id,
        trust_domain=spiffe_id.split("/")[2],
        x5t_s256="eDV0",
        fingerprint_sha256="ab" * 32,
        subject="O=corp",
        issuer="CN=corp dev CA",
        not_before=datetime(2026, 1, 1, tzinfo=UTC),
        not_after=datetime(2027, 1, 1, tzinfo=UTC),
        uri_sans=(spiffe_id,),
        dns_sans=(),
    )


def user(roles: tuple[str, ...] = ("payments-operator",), subject: str = "alice") -> Principal:
    return Principal(
        kind="user",
        issuer="https://idp.corp.example",
        subject=subject,
        claims={"roles": list(roles)},
        token_sha256="00" * 32,
        expires_at=2**31,
    )


def device(
    trust_level: int = 3, managed: bool = True, bound: bool = True, device_id: str = "laptop-7"
) -> Principal:
    return Principal(
        kind="device",
        issuer="https://devices.corp.example",
        subject=device_id,
        claims={"trust_level": trust_level, "managed": managed},
        token_sha256="11" * 32,
        expires_at=2**31,
        bound_to_client_cert=bound,
    )


def facts(
    method: str = "POST",
    path: str = "/api/v1/charges",
    service: str = "payments",
    query: dict[str, tuple[str, ...]] | None = None,
    request_id: str = "req-1",
    headers: dict[str, tuple[str, ...]] | None = None,
    when: datetime | None = None,
) -> RequestFacts:
    route = Route(name=f"{service}-api", service=service, upstream="http://127.0.0.1:9")
    q = query or {}
    return RequestFacts(
        request_id=request_id,
        method=method,
        scheme="https",
        host=f"{service}.internal",
        path=path,
        parsed_path=tuple(p for p in path.split("/") if p),
        raw_query="&".join(f"{k}={v}" for k, vs in q.items() for v in vs),
        query=q,
        headers=headers if headers is not None else {"content-type": ("application/json",)},
        protocol="HTTP/1.1",
        time=when or datetime(2026, 11, 28, 1, 2, 3, 456000, tzinfo=UTC),
        route=route,
        source_address="127.0.0.1",
    )


def make_input(
    *,
    source: str = f"{TD}/prod/sa/checkout",
    with_user: bool = True,
    with_device: bool = True,
    the_user: Principal | None = None,
    the_device: Principal | None = None,
    **facts_kw: Any,
) -> dict[str, Any]:
    creds = Credentials(
        user=(the_user or user()) if with_user else None,
        device=(the_device or device()) if with_device else None,
    )
    return build_policy_input(facts(**facts_kw), peer(source), creds)


async def started_decider(policy_dir: Path, decision_path: str = "t/decision") -> Any:
    """A real embedded-engine decider over `policy_dir`, started, decision cache off."""
    from ztproxy.config.policy import PolicyConfig
    from ztproxy.policy import build_decider
    from ztproxy.policy.decider import PolicyDecider

    cfg = PolicyConfig(
        policy_dirs=(str(policy_dir),), decision_path=decision_path, cache_ttl_ms=0, watch=False
    )
    d = build_decider(cfg)
    await d.start()  # type: ignore[attr-defined]
    assert isinstance(d, PolicyDecider)
    return d


async def outcome(
    d: Any, doc: Any, *, with_reason: bool = True, decision_path: str = "t/decision"
) -> str:
    """ "allow", "deny[:reason]" or "503:reason" for one decision."""
    from ztproxy.errors import ServiceUnavailable

    try:
        decision = await d.decide(decision_path, doc)
    except ServiceUnavailable as exc:
        return f"503:{exc.reason}"
    if decision.allowed:
        return "allow"
    return f"deny:{decision.reason}" if with_reason else "deny"
