"""The interfaces (typing.Protocol) at the seams of the pipeline.

The pipeline depends on these, never on a concrete engine, verifier or sink, so that
the remote OPA and the embedded Rego engine are interchangeable, and test doubles are
type-checked rather than hoped for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from multidict import CIMultiDictProxy

from .model import AuditEvent, Credentials, Decision, PeerIdentity, Route


class Authenticator(Protocol):
    """Stage 3: verifies the user and device tokens a request carries.

    Raises `errors.Unauthenticated(reason)` for a missing or invalid credential on a
    route that needs it, `errors.ServiceUnavailable("issuer_keys_unavailable")` while
    an issuer's keys have never loaded (or have gone stale past the window)."""

    async def authenticate(
        self, headers: CIMultiDictProxy[str], raw_query: str, route: Route, peer: PeerIdentity
    ) -> Credentials: ...

    def credential_header_names(self) -> frozenset[str]:
        """Lowercased names of headers that carry credentials (never shown to policy,
        never logged): authorization, cookie, the device-token header."""
        ...

    def readiness(self) -> Mapping[str, bool]: ...

    def stats(self) -> Mapping[str, float]: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class Decider(Protocol):
    """Stage 5: a decision for a policy input, through the cache and the breaker.

    Returns a Decision (allowed or not; an invalid policy result is a deny with reason
    `policy_result_invalid`). Raises `errors.ServiceUnavailable(reason)` when the engine
    cannot answer (error, timeout, circuit open): the pipeline then denies with 503."""

    @property
    def revision(self) -> str: ...

    async def decide(self, decision_path: str, input_doc: Mapping[str, Any]) -> Decision: ...

    def readiness(self) -> Mapping[str, bool]: ...

    def stats(self) -> Mapping[str, float]: ...

    async def reload(self) -> bool: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class AuditSink(Protocol):
    """Stage 7: the tamper-evident log. `append` never blocks the event loop.

    `accepting()` is False when the log cannot take records (queue full, disk error)
    and the operator has not chosen `on_failure: allow`; the pipeline then refuses new
    requests with 503 `audit_unavailable` before doing any other work."""

    def append(self, event: AuditEvent) -> None: ...

    def accepting(self) -> bool: ...

    def readiness(self) -> Mapping[str, bool]: ...

    def stats(self) -> Mapping[str, float]: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class PeerLookup(Protocol):
    """Stage 1 for one request: the verified workload identity of the request's
    connection, valid now and under `trust` (the request's runtime's trust store; a
    connection accepted under an older store is re-validated against this one).
    Raises `errors.Unauthenticated(reason)` otherwise (the connection is then closed)."""

    def __call__(self, request: Any, trust: Any, now: float) -> PeerIdentity: ...
