"""Strict JSON for token headers, token payloads and JWKS documents.

Takes bytes from the network (untrusted), returns plain JSON values. Stricter than
`json.loads` in the two ways that matter for tokens:

- a duplicate member name anywhere raises `DuplicateMember` (the standard library, and
  so PyJWT, keep the last one: two parsers could then disagree on `sub` or `aud`);
- `NaN`, `Infinity` and `-Infinity` (a Python extension, not JSON) raise `ValueError`.

Input must be UTF-8; nesting is bounded so a crafted document cannot exhaust the stack.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32


class DuplicateMember(ValueError):  # noqa: N818 - reads as a finding, like json's errors
    """A JSON object had the same member name twice."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateMember("duplicate member")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_no_constants)


def loads(data: bytes) -> Any:
    """Parse UTF-8 JSON strictly. Raises ValueError (or its subclass DuplicateMember)."""
    text = data.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if _depth_exceeds(text, MAX_DEPTH):
        raise ValueError("nested too deeply")
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _depth_exceeds(text: str, limit: int) -> bool:
    """Cheap upper bound on nesting (brackets inside strings only over-count)."""
    if text.count("{") + text.count("[") <= limit:
        return False
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
            if depth > limit:
                return True
        elif ch in "}]":
            depth -= 1
    return False
