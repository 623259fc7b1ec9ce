"""The policy engine seam: what the embedded Rego engine and the remote OPA share.

An engine takes a decision path (slash form, `ztproxy/authz/decision`) and the policy
input document, and returns the raw value the policy produced (`RawResult`), keeping
"undefined" distinct from any value (even null). It does not interpret the value:
`result.parse_result` does, for both engines alike. When it cannot answer it raises
`EngineError` with one of the stable reason codes below; the decider turns that into
`errors.ServiceUnavailable` (503). Error details never carry input or secrets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# Reason codes for an engine that cannot answer (all fail closed with 503).
ENGINE_ERROR = "policy_engine_error"  # evaluation error, OPA 5xx, unparseable answer
TIMEOUT = "policy_timeout"  # no answer within timeout_ms
CIRCUIT_OPEN = "policy_circuit_open"  # breaker open: not even asked
UNAVAILABLE = "policy_unavailable"  # no policy loaded, OPA unreachable / reset
# the embedded engine refuses an input number it would compute differently from OPA
# (a non-integer, or an integer from 2^53 on): the input's fault, not the engine's, so
# it does not count toward the circuit breaker
INPUT_NUMBER = "policy_input_unsupported_number"
# likewise a string regorus would measure differently: its `count` of a string counts
# UTF-16 code units (OPA: code points), so a character beyond U+FFFF counts twice
INPUT_STRING = "policy_input_unsupported_string"
INPUT_REFUSALS = frozenset({INPUT_NUMBER, INPUT_STRING})


class EngineError(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class RawResult:
    """What the engine answered. `defined` is False for an undefined decision (OPA's
    `{}`), in which case `value` is None. `http_status` is set when OPA answered with
    an HTTP error status yet carried a `result` (never trusted: an invalid result).
    `text` is the value's JSON as the embedded engine printed it, when it did: the
    same text is the same value, so the decider parses it once (`value` is shared
    then: read it, never change it). `problem` is set when the answer could not be
    read as a result at all (OPA's body had a duplicate member): an invalid result."""

    defined: bool
    value: Any = None
    http_status: int | None = None
    text: str = field(default="", compare=False)
    problem: str = ""


UNDEFINED = RawResult(defined=False)


class PolicyEngine(Protocol):
    name: str  # "embedded" | "opa": the metrics label
    engine_name: str  # "embedded-regorus" | "opa-rest": the audit record's `engine`

    @property
    def revision(self) -> str: ...

    @property
    def loaded(self) -> bool:
        """True when the engine can answer (a policy compiled / OPA client open)."""
        ...

    async def evaluate(self, decision_path: str, input_doc: Mapping[str, Any]) -> RawResult: ...

    async def reload(self) -> bool: ...

    def changed_on_disk(self) -> bool:
        """Cheap check (stat only) whether the watched files changed since the last load."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...
