"""Stage 2a: the one canonical request target.

Takes the request target exactly as it arrived on the wire (aiohttp's `raw_path`,
which its C parser leaves undecoded) and returns the path and query that the policy
sees and that go upstream, byte for byte the same. Nothing is "fixed": anything two
parsers could read differently is refused with a reason code.

Rules (each failure is a 400 with the reason in brackets):
- origin-form only: the target starts with "/" [absolute_form_target, bad_target]
- no fragment [fragment]
- printable ASCII only: no NUL, control bytes, DEL, spaces or raw non-ASCII [control_byte,
  non_ascii]
- no raw backslash [backslash]
- percent-escapes well formed and valid UTF-8 [bad_percent_encoding]; never an encoded
  slash, backslash, dot, percent, NUL/control byte [encoded_separator, encoded_dot,
  encoded_percent, control_byte]
- no dot segments "." or ".." [dot_segment]
- no empty segment "//" [empty_segment]: many backends merge slashes, which would let
  "//admin" pass a policy written for "/admin"
- no ";" in the path [path_parameter]: servlet containers strip ";params" from
  segments, which would let "/admin;x" pass a policy written for "/admin"
Other escapes (for example %20) are kept verbatim on both sides; `parsed_path` holds the
decoded segments for policy convenience.

The answer depends on the target alone, so the answers for short targets (the common
case: the same paths come again and again) are remembered, least recently used first
out, bounded in entries and in size; a refused target is checked anew every time. The
remembered values are immutable (tuples, a read-only mapping).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from urllib.parse import parse_qsl, unquote

from ..errors import BadRequest

_HEX = frozenset("0123456789abcdefABCDEF")
# Bytes whose percent-encoded form is refused in the path: "/", "\", ".", and controls.
# An encoded "%" is refused too: a backend that decodes twice would turn "%252e" into ".".
_FORBIDDEN_ESCAPES = {0x2F: "encoded_separator", 0x5C: "encoded_separator", 0x2E: "encoded_dot",
                      0x25: "encoded_percent"}


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
    for ch in text[match.start():]:
        o = ord(ch)
        if o < 0x20 or o == 0x7F:
            raise BadRequest("control_byte")
        if o > 0x7E:
            raise BadRequest("non_ascii")
        if ch == " ":
            raise BadRequest("control_byte")
        if ch == "\\":
            raise BadRequest("backslash")


def _check_escapes(text: str, *, in_path: bool) -> None:
    i = text.find("%")
    while i >= 0:
        pair = text[i + 1:i + 3]
        if len(pair) != 2 or not set(pair) <= _HEX:
            raise BadRequest("bad_percent_encoding")
        value = int(pair, 16)
        if value < 0x20 or value == 0x7F:
            raise BadRequest("control_byte")
        if in_path and value in _FORBIDDEN_ESCAPES:
            raise BadRequest(_FORBIDDEN_ESCAPES[value])
        i = text.find("%", i + 3)


def _decode(text: str) -> str:
    if "%" not in text:
        return text
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("bad_percent_encoding") from None


MEMO_ENTRIES = 4096
MEMO_MAX_TARGET = 512  # longer targets are not remembered: the memo stays a few MiB


def canonicalize(raw_target: str) -> CanonicalTarget:
    """Validate a raw request target; return its canonical path and query."""
    if len(raw_target) <= MEMO_MAX_TARGET:
        return _remembered(raw_target)
    return _canonicalize(raw_target)


def _canonicalize(raw_target: str) -> CanonicalTarget:
    if not raw_target.startswith("/"):
        if "://" in raw_target[:16]:
            raise BadRequest("absolute_form_target")
        raise BadRequest("bad_target")
    if "#" in raw_target:
        raise BadRequest("fragment")
    _check_chars(raw_target)
    path, sep, raw_query = raw_target.partition("?")
    _check_escapes(path, in_path=True)
    _check_escapes(raw_query, in_path=False)
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
            pairs = parse_qsl(raw_query, keep_blank_values=True, strict_parsing=False,
                              errors="strict", max_num_fields=1000)
        except (UnicodeDecodeError, ValueError):
            raise BadRequest("bad_query") from None
        for key, value in pairs:
            query.setdefault(key, []).append(value)
    return CanonicalTarget(path=path, parsed_path=parsed, raw_query=raw_query,
                           query=MappingProxyType({k: tuple(v) for k, v in query.items()}))


_remembered = lru_cache(maxsize=MEMO_ENTRIES)(_canonicalize)
