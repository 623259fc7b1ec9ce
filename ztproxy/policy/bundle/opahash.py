"""The file digest OPA's bundle signatures carry (OPA bundle/hash.go, bundle/verify.go).

Takes a file's bundle name and bytes; returns the digest as OPA computes it:

- for a "structured" file (base name `data.json`, `data.yaml`, `.manifest`; OPA's
  `IsStructuredDoc`), the file is parsed and walked: an object as `{`, its keys in
  sorted (byte) order each as `key:value` joined by `,`, then `}`; an array as `[`,
  elements joined by `,`, `]`; a string, number, boolean or null as Go's
  `json.Encoder` with HTML escaping off writes it. Numbers are decoded with
  `UseNumber`, so a number is hashed as the text it was written with (`1.0` stays
  `1.0`); whitespace and key order do not change the digest;
- for any other file (`*.rego`, `data.yml`: not in OPA's list), the bytes as they are.

Hash algorithms: OPA accepts MD5, SHA-1, SHA-224, SHA-256, SHA-384, SHA-512,
SHA-512-224 and SHA-512-256. We refuse MD5 and SHA-1 (broken; `opa build` always
writes SHA-256), see `ALGORITHMS`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from ..yamldata import load_yaml

STRUCTURED = frozenset({"data.json", "data.yaml", ".manifest", "signatures.json"})

ALGORITHMS: Mapping[str, Callable[[], Any]] = MappingProxyType(
    {
        "SHA-224": hashlib.sha224,
        "SHA-256": hashlib.sha256,
        "SHA-384": hashlib.sha384,
        "SHA-512": hashlib.sha512,
        "SHA-512-224": lambda: hashlib.new("sha512_224"),
        "SHA-512-256": lambda: hashlib.new("sha512_256"),
    }
)
WEAK = frozenset({"MD5", "SHA-1"})


class Number(str):
    """A JSON number kept as the text it was written with (Go's json.Number)."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_number_preserving(content: bytes) -> Any:
    return json.loads(content, parse_int=Number, parse_float=Number, parse_constant=_no_constant)


# Go's short escapes (encoding/json encodeState.string; \b and \f from Go 1.22)
_SHORT: Mapping[str, str] = MappingProxyType(
    {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
)


def go_string(s: str) -> str:
    """A string as Go's encoding/json writes it with SetEscapeHTML(false): short escapes
    for quote, backslash, \\n \\r \\t \\b \\f (Go 1.22 on), \\u00xx for the other control
    characters, \\u2028 and \\u2029 escaped, a lone surrogate (which Go's decoder
    already turned into U+FFFD) as U+FFFD, everything else as UTF-8."""
    out = ['"']
    for c in s:
        o = ord(c)
        if c in _SHORT:
            out.append(_SHORT[c])
        elif o < 0x20:
            out.append(f"\\u{o:04x}")
        elif o in (0x2028, 0x2029):
            out.append(f"\\u{o:04x}")
        elif 0xD800 <= o <= 0xDFFF:
            out.append("\ufffd")  # Go decoded the lone surrogate escape to U+FFFD
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def _walk(value: Any, out: list[str]) -> None:
    if isinstance(value, dict):
        out.append("{")
        for i, key in enumerate(sorted(value, key=lambda k: k.encode("utf-8", "surrogatepass"))):
            if i:
                out.append(",")
            out.append(go_string(key))
            out.append(":")
            _walk(value[key], out)
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _walk(item, out)
        out.append("]")
    elif isinstance(value, Number):
        out.append(str(value))
    elif isinstance(value, str):
        out.append(go_string(value))
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif value is None:
        out.append("null")
    elif isinstance(value, int):
        out.append(str(value))
    else:
        raise ValueError(f"cannot hash a {type(value).__name__} as OPA does")


def canonical_text(value: Any) -> bytes:
    out: list[str] = []
    _walk(value, out)
    return "".join(out).encode("utf-8", "surrogatepass")


def is_structured(name: str) -> bool:
    return name.rsplit("/", 1)[-1] in STRUCTURED


def file_digest(name: str, content: bytes, algorithm: str = "SHA-256") -> str:
    """Hex digest of a bundle file as OPA computes it. ValueError: the algorithm is not
    one we accept, or a structured file does not parse."""
    factory = ALGORITHMS.get(algorithm)
    if factory is None:
        raise ValueError(f"hash algorithm {algorithm[:20]!r} not accepted")
    h = factory()
    if is_structured(name):
        base = name.rsplit("/", 1)[-1]
        value = load_yaml(content) if base == "data.yaml" else parse_number_preserving(content)
        h.update(canonical_text(value))
    else:
        h.update(content)
    return str(h.hexdigest())
