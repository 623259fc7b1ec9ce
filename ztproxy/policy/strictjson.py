"""Strict JSON for OPA's answers: a duplicate member name is an error, never last-wins.

Takes the body of an OPA Data API response (untrusted bytes); returns plain JSON values
or raises `ValueError` (`DuplicateMember` for `{"result": false, "result": true}` or a
duplicated `allowed`, anywhere in the document). `NaN`/`Infinity` are not JSON and are
refused too. A small copy of `identity.strictjson` (the layer contract keeps policy from
importing identity).
"""

from __future__ import annotations

import json
from typing import Any


class DuplicateMember(ValueError):  # noqa: N818 - reads as a finding, like json's errors
    """A JSON object had the same member name twice."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateMember(f"duplicate member {key[:40]!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_no_constants)


def loads(data: bytes | str) -> Any:
    """Parse JSON strictly. Raises ValueError (DuplicateMember for a repeated name)."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
