"""Canonical JSON (RFC 8785, JCS) for audit records, by the fast path.

Takes a record value: a mapping with ASCII keys whose values are strings, integers
within +-(2**53 - 1), booleans, None, or lists of those. For that value space
`json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)` gives the
same bytes as RFC 8785 (tests/audit/test_canonical.py proves it against the `rfc8785`
package with hypothesis) at a fifth of the cost. Floats are where the two differ,
so `safe_record` turns anything outside the value space into a string first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson

_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
INT_LIMIT = 2**53 - 1
_SCALARS = (str, bool, type(None))


def _safe_scalar(value: Any) -> Any:
    if isinstance(value, str):
        # A lone surrogate (e.g. "\ud800" in a token claim) cannot be UTF-8 encoded.
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, int) and -INT_LIMIT <= value <= INT_LIMIT:
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) <= INT_LIMIT:
        return int(value)
    return str(value)


def _in_space(value: Any) -> bool:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-INT_LIMIT <= value <= INT_LIMIT)
    if kind is list:
        return all(type(v) is str for v in value)
    return False


def safe_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record with every value brought into the canonical value space."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, (list, tuple)):
            out[str(key)] = [_safe_scalar(v) for v in value]
        else:
            out[str(key)] = _safe_scalar(value)
    return out


def canonical_json(record: Mapping[str, Any]) -> bytes:
    """RFC 8785 bytes of `record` (fast path; out-of-space values made safe first)."""
    if not all(_in_space(v) for v in record.values()):
        record = safe_record(record)
    try:
        return _ENCODER.encode(record).encode("utf-8")
    except UnicodeEncodeError:
        return _ENCODER.encode(safe_record(record)).encode("utf-8")


_DUMPS_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER  # raises beyond 2**53
_SCALAR_TYPES = frozenset((str, int, bool, type(None)))
_VALUE_TYPES = _SCALAR_TYPES | {list}


def is_canonical_line(line: bytes) -> bool:
    """True when `line` (one record, without its newline) is exactly the canonical
    JSON of the object it holds: an object whose values are strings, integers within
    +-(2**53 - 1), booleans, null or flat lists of those (no float, no nested
    object), its members sorted, no duplicate key, no whitespace, no escape RFC 8785
    would not write. Parsing and re-encoding with orjson (sorted keys, strict
    integers, the same escaping as RFC 8785 for this value space: the writer's every
    record passes, tests/audit/test_verify_strictness.py) and comparing bytes decides
    all of it at once; the value types are checked by sets of types (C loops), as
    this runs for every record verify reads."""
    try:
        obj = orjson.loads(line)
        if type(obj) is not dict:
            return False
        values = obj.values()
        kinds = set(map(type, values))
        if kinds <= _SCALAR_TYPES:
            pass
        elif kinds <= _VALUE_TYPES:
            for value in values:
                if type(value) is list and not set(map(type, value)) <= _SCALAR_TYPES:
                    return False
        else:
            return False
        return bool(orjson.dumps(obj, option=_DUMPS_OPTIONS) == line)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return False
