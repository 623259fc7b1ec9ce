"""Which parts of the input a policy can read, and the input cut down to them.

Takes the Rego modules the embedded engine serves (all of them, whatever rule is
asked); returns the input paths they reference (`input_paths`), or None when that
cannot be told from the text. `project` keeps only those paths of an input document.

Why: a decision is a function of the policy, the data and the parts of the input the
policy reads. Keying the decision cache on those parts (not on the whole document)
lets requests that differ only in what the policy never looks at (a query parameter,
a header, the request id) share one decision, and the engine parses a smaller input.
It is also stricter than keying on the whole input minus id and time: a policy that
reads `input.request.time` gets the time in its key, so a cached answer never outlives
the second it was made for.

The reading is conservative. Comments and string literals are skipped; every `input`
that starts a reference is followed through `.name` and `["name"]` selectors, and
the path stops at the first selector that is anything else (a variable, a number, a
call): the whole subtree under that prefix counts as read. `import input.a.b [as x]`
counts `a.b` as read (every use of the alias stays inside it). The answer is None (the
whole input counts) when `input` appears bare (passed to a function, iterated,
`import input`), after `with`, or when a module holds a template string (`$"..."`,
whose braces hold code the scan would not see).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from .canonical import canonical_bytes
from .prepared import sorted_json

Path = tuple[str, ...]
KEY_MAX_BYTES = 1024

_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT = _IDENT_START | frozenset("0123456789")


class _Unknown(Exception):
    """The text does not say which paths are read."""


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, value) with kind "id", "str" (value decoded), "num" or "op"; comments
    and whitespace dropped."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif c == '"':
            j, value = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\":
                    if j + 1 >= n:
                        raise _Unknown("unterminated string")
                    esc = text[j + 1]
                    if esc == "u":
                        value.append(chr(int(text[j + 2:j + 6], 16)))
                        j += 6
                        continue
                    value.append({"n": "\n", "t": "\t", "r": "\r", "b": "\b",
                                  "f": "\f"}.get(esc, esc))
                    j += 2
                    continue
                value.append(text[j])
                j += 1
            if j >= n:
                raise _Unknown("unterminated string")
            out.append(("str", "".join(value)))
            i = j + 1
        elif c == "`":
            end = text.find("`", i + 1)
            if end < 0:
                raise _Unknown("unterminated raw string")
            out.append(("str", text[i + 1:end]))
            i = end + 1
        elif c == "$" and i + 1 < n and text[i + 1] in "\"`":
            raise _Unknown("template string")
        elif c in _IDENT_START:
            j = i + 1
            while j < n and text[j] in _IDENT:
                j += 1
            out.append(("id", text[i:j]))
            i = j
        elif c.isdigit():
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] in "._"):
                j += 1
            out.append(("num", text[i:j]))
            i = j
        else:
            out.append(("op", c))
            i += 1
    return out


def _paths_in(text: str) -> set[Path]:
    toks = _tokens(text)
    found: set[Path] = set()
    for k, (kind, value) in enumerate(toks):
        if kind != "id" or value != "input":
            continue
        before = toks[k - 1] if k else ("op", "")
        if before == ("op", "."):
            continue  # data.x.input: a field that happens to be called input
        if before == ("id", "with"):
            raise _Unknown("with input")
        path: list[str] = []
        j = k + 1
        while j < len(toks):
            if toks[j] == ("op", ".") and j + 1 < len(toks) and toks[j + 1][0] == "id":
                path.append(toks[j + 1][1])
                j += 2
            elif (toks[j] == ("op", "[") and j + 2 < len(toks) and toks[j + 1][0] == "str"
                  and toks[j + 2] == ("op", "]")):
                path.append(toks[j + 1][1])
                j += 3
            else:
                break
        if not path:
            raise _Unknown("input read whole")
        found.add(tuple(path))
    return found


def input_paths(modules: Iterable[str]) -> tuple[Path, ...] | None:
    """The input paths the modules can read (none is a prefix of another), or None."""
    found: set[Path] = set()
    try:
        for text in modules:
            found |= _paths_in(text)
    except (_Unknown, ValueError):
        return None
    minimal = [p for p in sorted(found, key=len)
               if not any(p[:i] in found for i in range(1, len(p)))]
    return tuple(sorted(minimal))


def project(doc: Mapping[str, Any], paths: tuple[Path, ...]) -> dict[str, Any]:
    """`doc` with only `paths` (prefix-free, as `input_paths` gives them). A path that
    ends early at a value that is not an object keeps that value (`null`, a list...),
    so reading further below it is undefined here exactly as in the whole document; a
    missing key stays missing. (Copying more than a path asks is always safe: an
    object that is not a dict is kept whole.)"""
    return _cut(doc, _plan(paths))


_Plan = dict[str, "_Plan | None"]  # key -> what to keep below it (None: all of it)


@lru_cache(maxsize=16)
def _plan(paths: tuple[Path, ...]) -> _Plan:
    plan: _Plan = {}
    for path in sorted(paths, key=len):  # shorter first: a whole subtree wins
        node: _Plan | None = plan
        for key in path[:-1]:
            assert node is not None
            if key in node and node[key] is None:
                node = None  # kept whole already
                break
            node = node.setdefault(key, {})
        if node is not None:
            node[path[-1]] = None
    return plan


def _cut(src: Mapping[str, Any], plan: _Plan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, below in plan.items():
        if key in src:
            value = src[key]
            out[key] = value if below is None or type(value) is not dict else _cut(value,
                                                                                  below)
    return out


def view_key(view: Mapping[str, Any]) -> bytes:
    """The cut-down input as the decision cache's key: its bytes (sorted keys) while
    they are short (a hit then costs one encoding of a few hundred bytes and a lookup),
    their SHA-256 past KEY_MAX_BYTES (so that requests with large headers the policy
    reads cannot fill memory with long keys). Only equality matters here, so orjson's
    float spelling is as good as json's; what orjson refuses (an int past 64 bits) is
    written by json instead. The prefixes keep the three forms apart (orjson output
    starts with "{")."""
    data = sorted_json(view)
    if data is None:
        data = b"json:" + canonical_bytes(view)
    if len(data) > KEY_MAX_BYTES:
        return b"sha256:" + hashlib.sha256(data).digest()
    return data
