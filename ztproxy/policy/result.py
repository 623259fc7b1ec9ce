"""Turns a raw policy result into a `model.Decision`, failing closed.

Takes a `RawResult` from either engine and the policy revision; returns a Decision and,
for an invalid result, a short description of what was wrong (for the log only). The
accepted shapes follow opa-envoy-plugin plus `reasons`:

    true | false
    {"allowed": bool, "reasons": [str], "http_status": int, "headers": {str: str},
     "response_headers_to_add": {str: str}, "body": str}

Anything else (undefined, null, "true", 1, [true], an object without a boolean
`allowed`, a field of the wrong type, a header that is not a valid name/value, an HTTP
error that carries a result) is a deny with reason `policy_result_invalid` and status
403. Unknown extra fields are ignored (so policies port from opa-envoy-plugin).
Reasons are bounded (count and length): they go to the audit log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..model import Decision
from .engine import RawResult

ALLOW = "policy_allow"
DENY = "policy_deny"
INVALID = "policy_result_invalid"

MAX_REASONS = 16
MAX_REASON_LEN = 200
MAX_HEADERS = 32
MAX_HEADER_VALUE = 4096
MAX_BODY = 64 * 1024
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 field-name


class _Invalid(Exception):
    pass


def invalid(revision: str, engine: str = "") -> Decision:
    return Decision(
        allowed=False, reason=INVALID, http_status=403, policy_revision=revision, engine=engine
    )


def _headers(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > MAX_HEADERS:
        raise _Invalid(f"{field} must be an object of at most {MAX_HEADERS} headers")
    out: dict[str, str] = {}
    for name, val in value.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise _Invalid(f"{field} has a header name that is not a token")
        if (
            not isinstance(val, str)
            or len(val) > MAX_HEADER_VALUE
            or any(c in val for c in "\r\n\0")
        ):
            raise _Invalid(f"{field}.{name} must be a string without CR, LF or NUL")
        out[name.lower()] = val
    return out


def _reasons(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise _Invalid("reasons must be a list of strings")
    return tuple(r[:MAX_REASON_LEN] for r in value[:MAX_REASONS])


def _status(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise _Invalid("http_status must be an integer from 100 to 599")
    return value


def _object(value: Mapping[str, Any], revision: str, engine: str) -> Decision:
    allowed = value.get("allowed")
    if not isinstance(allowed, bool):
        raise _Invalid("allowed must be a boolean")
    body = value.get("body")
    if body is not None and (not isinstance(body, str) or len(body) > MAX_BODY):
        raise _Invalid(f"body must be a string of at most {MAX_BODY} characters")
    return Decision(
        allowed=allowed,
        reason=ALLOW if allowed else DENY,
        reasons=_reasons(value.get("reasons")),
        http_status=_status(value.get("http_status")),
        headers=_headers(value.get("headers"), "headers"),
        response_headers=_headers(value.get("response_headers_to_add"), "response_headers_to_add"),
        body=body,
        policy_revision=revision,
        engine=engine,
    )


def parse_result(raw: RawResult, revision: str, engine: str = "") -> tuple[Decision, str | None]:
    """(decision, problem). `problem` is None for a well-formed result. `engine` names
    the evaluator that answered (the audit record's `engine`)."""
    if raw.problem:
        return invalid(revision, engine), raw.problem
    if not raw.defined:
        return invalid(revision, engine), "decision is undefined"
    if raw.http_status is not None:
        return invalid(revision, engine), f"OPA answered HTTP {raw.http_status} with a result"
    value = raw.value
    if isinstance(value, bool):
        return Decision(
            allowed=value, reason=ALLOW if value else DENY, policy_revision=revision, engine=engine
        ), None
    if isinstance(value, Mapping):
        try:
            return _object(value, revision, engine), None
        except _Invalid as exc:
            return invalid(revision, engine), str(exc)
    kind = "null" if value is None else type(value).__name__
    return invalid(revision, engine), f"decision is a {kind}, not a boolean or an object"
