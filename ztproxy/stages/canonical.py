"""Stage 2a: the one canonical request target.

Takes the request target exactly as it arrived on the wire (aiohttp's `raw_path`,
which its C parser leaves undecoded) and returns the path and query that the routes,
the policy and the upstream all see, byte for byte the same.

The normalization (RFC 3986 section 6.2.2), applied to path and query alike, before
routing: an escape of an unreserved character (ALPHA DIGIT "-" "." "_" "~") is decoded
(`/%61dmin` is `/admin`: every common framework decodes it, so a route or a rule
written for `/admin` must see it too); every other escape is kept, with its hex digits
in upper case (`%c3%a9` is `%C3%A9`). The result is a fixed point: normalizing it again
changes nothing.

Refused (each a 400 with the reason in brackets), nothing else is "fixed":
- origin-form only: the target starts with "/" [absolute_form_target, bad_target]
- no fragment [fragment]
- printable ASCII only: no NUL, control bytes, DEL, spaces or raw non-ASCII [control_byte,
  non_ascii]
- no raw backslash [backslash]
- percent-escapes well formed and valid UTF-8 [bad_percent_encoding]; never an encoded
  slash, backslash, dot, percent (in the path), NUL/control byte anywhere
  [encoded_separator, encoded_dot, encoded_percent, control_byte]
- no dot segments "." or ".." [dot_segment] (an escaped dot is refused before decoding,
  so decoding never makes one)
- no empty segment "//" [empty_segment]: many backends merge slashes, which would let
  "//admin" pass a policy written for "/admin"
- no ";" in the path, raw or encoded [path_parameter]: servlet containers strip
  ";params" from segments, which would let "/admin;x" pass a policy written for "/admin"
`parsed_path` holds the fully decoded segments for policy convenience.

The answer depends on the target alone, so accepted answers for short targets are
remembered in a memo bounded by an estimate of the bytes it holds (emptied when full);
a refused target is checked anew every time. The memo holds exactly what the slow path
returned for the same key, and the values are immutable (tuples, a read-only mapping).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import parse_qsl, unquote

from ..errors import BadRequest

_HEXDIGITS = "0123456789abcdefABCDEF"
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Bytes whose percent-encoded form is refused in the path: "/", "\", ".", and "%".
# An encoded "%" is refused: a backend that decodes twice would turn "%252e" into ".".
# An encoded ";" is refused as ";" is: a backend that decodes, then strips ";params",
# would serve "/admin" for "/admin%3Bx", which the router took for another path.
_FORBIDDEN_ESCAPES = {
    0x2F: "encoded_separator",
    0x5C: "encoded_separator",
    0x2E: "encoded_dot",
    0x25: "encoded_percent",
    0x3B: "path_parameter",
}


def _escape_table(*, in_path: bool) -> dict[str, str]:
    """Every two-hex-digit pair (any case) -> its normal form ("a" for "61", "%C3" for
    "c3") or, for a refused escape, "!" followed by the reason code."""
    table: dict[str, str] = {}
    for hi in _HEXDIGITS:
        for lo in _HEXDIGITS:
            value = int(hi + lo, 16)
            if value < 0x20 or value == 0x7F:
                out = "!control_byte"
            elif in_path and value in _FORBIDDEN_ESCAPES:
                out = "!" + _FORBIDDEN_ESCAPES[value]
            elif chr(value) in _UNRESERVED:
                out = chr(value)
            else:
                out = "%" + (hi + lo).upper()
            table[hi + lo] = out
    return table


_PATH_ESCAPES = _escape_table(in_path=True)
_QUERY_ESCAPES = _escape_table(in_path=False)


@dataclass(frozen=True, slots=True)
class CanonicalTarget:
    path: str
    parsed_path: tuple[str, ...]
    raw_query: str
    query: MappingProxyType[str, tuple[str, ...]]

    @property
    def target(self) -> str:
        return f"{self.path}?{self.raw_query}" if self.raw_query else self.path


# Anything outside printable ASCII, a space or a backslash: the only characters that
# need a closer look (the fast path is one regex scan that finds none).
_SUSPECT = re.compile(r"[^\x21-\x5b\x5d-\x7e]")


def _check_chars(text: str) -> None:
    match = _SUSPECT.search(text)
    if match is None:
        return
    for ch in text[match.start() :]:
        o = ord(ch)
        if o < 0x20 or o == 0x7F:
            raise BadRequest("control_byte")
        if o > 0x7E:
            raise BadRequest("non_ascii")
        if ch == " ":
            raise BadRequest("control_byte")
        if ch == "\\":
            raise BadRequest("backslash")


def normalize_escapes(text: str, *, in_path: bool) -> str:
    """Validate every percent-escape of `text`; decode the unreserved ones, upper-case
    the rest (RFC 3986 6.2.2.1 and 6.2.2.2)."""
    if "%" not in text:
        return text
    table = _PATH_ESCAPES if in_path else _QUERY_ESCAPES
    parts = text.split("%")
    out = [parts[0]]
    for part in parts[1:]:
        norm = table.get(part[:2])
        if norm is None:
            raise BadRequest("bad_percent_encoding")
        if norm[0] == "!":
            raise BadRequest(norm[1:])
        out.append(norm)
        out.append(part[2:])
    return "".join(out)


def _decode(text: str) -> str:
    if "%" not in text:
        return text
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("bad_percent_encoding") from None


MEMO_MAX_TARGET = 512  # longer targets are not remembered
MEMO_MAX_BYTES = 2 * 1024 * 1024
_memo: dict[str, CanonicalTarget] = {}
_memo_bytes = 0


def memo_cost(raw_target: str, result: CanonicalTarget) -> int:
    """An upper estimate of the bytes one memo entry holds (CPython 3.11+, 64-bit): the
    key and the three strings (about 60 bytes of header each plus the text), the
    dataclass, the parsed tuple and its strings, the query dict and its tuples of
    strings (about 140 bytes per field, beyond its text)."""
    fields = sum(len(v) for v in result.query.values())
    return (
        4 * len(raw_target)
        + 600
        + 80 * len(result.parsed_path)
        + 240 * len(result.query)
        + 140 * fields
    )


def canonicalize(raw_target: str) -> CanonicalTarget:
    """Validate and normalize a raw request target; return its canonical path and query."""
    global _memo_bytes
    hit = _memo.get(raw_target)
    if hit is not None:
        return hit
    result = _canonicalize(raw_target)
    if len(raw_target) <= MEMO_MAX_TARGET:
        cost = memo_cost(raw_target, result)
        if _memo_bytes + cost > MEMO_MAX_BYTES:
            _memo.clear()
            _memo_bytes = 0
        _memo[raw_target] = result
        _memo_bytes += cost
    return result


def memo_clear() -> None:
    global _memo_bytes
    _memo.clear()
    _memo_bytes = 0


def memo_size() -> tuple[int, int]:
    """(entries, estimated bytes) held by the memo."""
    return len(_memo), _memo_bytes


def _canonicalize(raw_target: str) -> CanonicalTarget:
    if not raw_target.startswith("/"):
        if "://" in raw_target[:16]:
            raise BadRequest("absolute_form_target")
        raise BadRequest("bad_target")
    if "#" in raw_target:
        raise BadRequest("fragment")
    _check_chars(raw_target)
    path, _, raw_query = raw_target.partition("?")
    path = normalize_escapes(path, in_path=True)
    raw_query = normalize_escapes(raw_query, in_path=False)
    if ";" in path:
        raise BadRequest("path_parameter")
    segments = path[1:].split("/")
    for k, segment in enumerate(segments):
        if segment in (".", ".."):
            raise BadRequest("dot_segment")
        if segment == "" and k != len(segments) - 1:
            raise BadRequest("empty_segment")
    parsed = tuple(_decode(s) for s in segments if s)
    query: dict[str, list[str]] = {}
    if raw_query:
        try:
            pairs = parse_qsl(
                raw_query,
                keep_blank_values=True,
                strict_parsing=False,
                errors="strict",
                max_num_fields=1000,
            )
        except (UnicodeDecodeError, ValueError):
            raise BadRequest("bad_query") from None
        for key, value in pairs:
            query.setdefault(key, []).append(value)
    return CanonicalTarget(
        path=path,
        parsed_path=parsed,
        raw_query=raw_query,
        query=MappingProxyType({k: tuple(v) for k, v in query.items()}),
    )
