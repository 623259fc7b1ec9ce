"""What the audit record may hold of a request's own text.

Audit records are hash-chained and signed: nothing can be redacted later, so a secret
must never get in. `audited_path` replaces every JWT-shaped run in a path (three or
more base64url parts joined by dots, padded or not, the first starting as the encoding
of `{"` or of `{` and white space does) by `[jwt:sha256:<hex>]`, the SHA-256 of the
token text, so two records of the same token still match. `escaped` makes text the
parser handed over (possibly not canonical, possibly not even UTF-8) safe to record:
control bytes, non-ASCII and lone surrogates become backslash escapes, and the length
is bounded.
"""

from __future__ import annotations

import hashlib
import re

# A JOSE header is a JSON object: its encoding starts with that of `{"` (eyJ) or of
# `{` and white space (eyA, ewo, ew0, ewk), and is at least 12 characters long. Parts
# may carry "=" padding, raw or escaped: stripping it gives back the token.
_PART = r"[A-Za-z0-9_-]*(?:=|%3D)*"
_JWT = re.compile(r"(?:eyJ|eyA|ewo|ew0|ewk)[A-Za-z0-9_-]{9,}(?:=|%3D)*(?:\." + _PART + "){2,4}")
_STARTS = ("eyJ", "eyA", "ewo", "ew0", "ewk")
MAX_ESCAPED = 1024


def _digest(match: re.Match[str]) -> str:
    return "[jwt:sha256:" + hashlib.sha256(match.group(0).encode("ascii")).hexdigest() + "]"


def audited_path(path: str) -> str:
    """The path as the audit record holds it: JWT-shaped runs replaced by their digest."""
    if not any(start in path for start in _STARTS):
        return path
    return _JWT.sub(_digest, path)


def escaped(text: str | None) -> str | None:
    """Printable ASCII kept; everything else backslash-escaped; at most MAX_ESCAPED
    characters (then "...")."""
    if text is None:
        return None
    if not (text.isascii() and text.isprintable()):
        text = text.encode("unicode_escape").decode("ascii")
    if len(text) > MAX_ESCAPED:
        text = text[:MAX_ESCAPED] + "..."
    return text


def attempted_path(raw_target: str) -> str:
    """The path part of a target that was refused or matched no route, as recorded:
    no query (it may carry anything), escaped, JWT-shaped runs digested."""
    path = raw_target.partition("?")[0].partition("#")[0]
    return audited_path(escaped(path) or "")
