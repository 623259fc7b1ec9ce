"""YAML data files read the way OPA 0.61's loader reads them (go-yaml v2 into JSON).

Takes the bytes of a `.yaml`/`.yml` data file; returns a JSON-compatible value or
raises `ValueError` with one line naming the line and the construct. PyYAML's own
safe loader differs from OPA in ways a policy can feel (`2026-01-01` is a Python date
that JSON cannot carry, `y`/`n` stay strings, `1e3` stays a string, `1:20` is 80,
`0o17` is a string); this loader uses go-yaml v2's scalar rules instead:

- booleans: y Y yes Yes YES on On ON true True TRUE, and n N no No NO off Off OFF
  false False FALSE;
- null: ~ null Null NULL and the empty scalar;
- integers: decimal, 0x.., 0o.., 0b.., a leading-0 octal, `_` ignored; past 64 bits
  go-yaml makes a float: refused, as every float is;
- floats: [-+]?(.d+|d+(.d*)?)([eE][-+]?d+)? (so `1e3` is 1000 to OPA) are REFUSED with
  the line (the embedded engine computes non-integers in float64 where OPA is exact:
  see checks.py); .inf / .nan are refused (JSON has no such number);
- timestamps and sexagesimal numbers stay the text as written (go-yaml v2 keeps a
  timestamp decoded into an interface as its string);
- keys become strings (an integer key `1` is "1", as OPA's YAML-to-JSON step does);
  a duplicate key is refused.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_BOOL_TRUE = frozenset({"y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "true", "True", "TRUE"})
_BOOL_FALSE = frozenset(
    {"n", "N", "no", "No", "NO", "off", "Off", "OFF", "false", "False", "FALSE"}
)
_NULL = frozenset({"~", "null", "Null", "NULL", ""})
_INT = re.compile(r"[-+]?(0b[01]+|0o[0-7]+|0x[0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_SPECIAL_FLOAT = re.compile(r"[-+]?\.(inf|Inf|INF|nan|NaN|NAN)")
_INT64 = (-(1 << 63), (1 << 64) - 1)

_STR_TAG = "tag:yaml.org,2002:str"


class _Loader(yaml.SafeLoader):  # type: ignore[misc]
    pass


# no implicit typing at all: every plain scalar arrives as a str tag and is typed below
_Loader.yaml_implicit_resolvers = {}
_Loader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])


def _scalar(text: str, line: int) -> Any:
    if text in _BOOL_TRUE:
        return True
    if text in _BOOL_FALSE:
        return False
    if text in _NULL:
        return None
    if text[:1] not in "+-.0123456789" or not text:
        return text
    plain = text.replace("_", "")
    if _INT.fullmatch(plain):
        sign = -1 if plain.startswith("-") else 1
        digits = plain.lstrip("+-")
        if digits.startswith(("0b", "0o", "0x")):
            value = int(digits[2:], {"b": 2, "o": 8, "x": 16}[digits[1]])
        elif len(digits) > 1 and digits.startswith("0"):
            value = int(digits, 8)
        else:
            value = int(digits)
        value *= sign
        if _INT64[0] <= value <= _INT64[1]:
            return value
        raise ValueError(
            f"line {line}: number {text[:30]}: past 64 bits (OPA reads a "
            "float; the embedded engine refuses non-integers; quote it)"
        )
    if _FLOAT.fullmatch(plain):
        raise ValueError(
            f"line {line}: number {text[:30]}: non-integer numbers are "
            "refused (the embedded engine computes them in float64, OPA "
            "exactly; quote it or scale it to an integer)"
        )
    if _SPECIAL_FLOAT.fullmatch(text):
        raise ValueError(
            f"line {line}: scalar {text!r}: infinity and NaN are not JSON numbers (quote it)"
        )
    return text


def _value(node: yaml.Node, loader: _Loader) -> Any:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _STR_TAG and node.style is None:
            return _scalar(node.value, line)
        if node.tag == _STR_TAG or node.tag == "!":
            return node.value  # quoted or block scalar: always a string
        value = loader.construct_object(node, deep=True)
        if isinstance(value, (str, bool, int, float)) or value is None:
            return value
        raise ValueError(f"line {line}: tag {node.tag}: not JSON data")
    if isinstance(node, yaml.SequenceNode):
        return [_value(child, loader) for child in node.value]
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _value(key_node, loader)
            if isinstance(key, bool):
                key = "true" if key else "false"
            elif isinstance(key, int):
                key = str(key)
            elif not isinstance(key, str):
                raise ValueError(
                    f"line {key_node.start_mark.line + 1}: mapping key: "
                    "must be a string or an integer"
                )
            if key in out:
                raise ValueError(
                    f"line {key_node.start_mark.line + 1}: mapping key {key[:40]!r}: duplicate"
                )
            out[key] = _value(value_node, loader)
        return out
    raise ValueError(f"line {line}: unsupported YAML node")


def load_yaml(content: bytes) -> Any:
    """The document as OPA would read it, or ValueError("line N: construct: problem")."""
    loader = _Loader(content)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        return _value(node, loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ValueError(f"{where}YAML syntax: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"YAML: {type(exc).__name__}") from None
    finally:
        loader.dispose()
