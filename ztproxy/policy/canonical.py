"""Canonical JSON and its SHA-256, for the policy input digest and the cache key.

Takes a JSON-like document (dicts, lists, strings, numbers, booleans, None); returns
bytes / hex. Same bytes as `json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=False)` in UTF-8: the audit record's `policy_input_sha256` can be
recomputed by anyone from the document. Trusts nothing; holds no state.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

_VOLATILE_REQUEST_FIELDS = ("id", "time")


def canonical_bytes(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def sha256_hex(doc: Any) -> str:
    return hashlib.sha256(canonical_bytes(doc)).hexdigest()


def stable_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The input without what changes on every request (request id and time): what the
    decision cache keys on. Everything else (method, path, query, headers, source,
    user, device, destination) stays, so no entry answers a different request."""
    out = dict(doc)
    request = doc.get("request")
    if isinstance(request, Mapping):
        out["request"] = {k: v for k, v in request.items() if k not in _VOLATILE_REQUEST_FIELDS}
    return out
