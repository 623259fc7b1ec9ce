"""Load-time checks on a policy set, read from regorus's own parsed AST.

Takes the engine's `get_ast_as_json()` text (every module as regorus parsed it: no
lexer of ours) and the merged data document; gives `Facts` about the modules and the
problems that make the proxy refuse the set, each as one line naming file, line and
construct:

- a builtin call outside `ALLOWED_BUILTINS` (regorus lacks it, like `http.send`, or
  implements it differently from OPA, or no OPA vector backs it: see
  tests/policy/test_opa_vectors.py and docs/rego-authors.md);
- `with` on anything but `input` or `data` (mocking a function or builtin);
- a data document at a path a rule also defines (OPA refuses: "conflicting rules";
  regorus lets the data win, so a `data.json` could replace the decision rule);
- a decision path that no rule defines.

It also records what the modules read of `input` (`Facts.input_reads`): the static
path of every `input...` reference, `()` for a read of the whole document (a bare
`input`, a dynamic index, `some x in input`, `with input`, an `import input...`). The
decision cache uses it only to decide whether `request.id` / `request.time` may be left
out of the key; any doubt counts as a read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Builtins the embedded engine may call. Each one is exercised by the OPA 0.61 vectors
# (/work/shared/opa-vectors, tests/policy/test_opa_vectors.py) and regorus agrees with
# OPA on them, or differs only in the safe direction (an error, so 503, where OPA gives
# a value): see "Differences from OPA" in docs/rego-authors.md. Anything else is refused
# at load. Operators (==, +, in, ...) are not calls and are not listed.
ALLOWED_BUILTINS: frozenset[str] = frozenset({
    # aggregates / arrays / sets
    "count", "sum", "max", "min", "product", "sort",
    "array.concat", "array.slice", "array.reverse",
    "intersection", "union",
    # types
    "type_name", "is_array", "is_boolean", "is_null", "is_number", "is_object",
    "is_set", "is_string", "to_number",
    # numbers
    "abs", "ceil", "floor", "round", "numbers.range",
    # strings
    "concat", "contains", "endswith", "startswith", "indexof", "lower", "upper",
    "replace", "split", "substring", "trim", "trim_left", "trim_right", "trim_prefix",
    "trim_suffix", "trim_space", "strings.reverse", "sprintf", "format_int",
    # objects
    "object.get", "object.keys", "object.remove", "object.union", "object.union_n",
    "object.filter", "json.filter", "json.remove",
    # encoding
    "base64.encode", "base64.decode", "base64url.encode", "base64url.decode",
    "base64url.encode_no_pad", "hex.encode", "json.marshal", "json.unmarshal",
    "json.is_valid", "urlquery.encode", "urlquery.decode", "urlquery.encode_object",
    # matching
    "regex.match", "regex.is_valid", "regex.split", "regex.find_n", "regex.replace",
    "glob.match", "glob.quote_meta",
    # network / time / misc
    "net.cidr_contains", "net.cidr_intersects", "net.cidr_is_valid",
    "time.parse_rfc3339_ns", "time.now_ns", "time.date", "time.clock", "time.weekday",
    "time.add_date", "time.parse_duration_ns",
    "semver.is_valid", "semver.compare", "graph.reachable",
    "units.parse_bytes", "units.parse", "uuid.parse", "walk", "print",
})

_NOT_DEFINED = "rule"  # construct names used in messages


class PolicyCheckError(Exception):
    """One line: `file:line: construct: problem`."""


@dataclass(frozen=True, slots=True)
class Site:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(slots=True)
class Facts:
    # full rule paths (data.<package>.<static head ref>) -> where first defined
    rules: dict[tuple[str, ...], Site] = field(default_factory=dict)
    # builtin name -> first call site
    builtins: dict[str, Site] = field(default_factory=dict)
    # static input paths read; () is "the whole input"
    input_reads: set[tuple[str, ...]] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    def reads(self, path: Sequence[str]) -> bool:
        """Whether the modules may read `input.<path>` (or anything above/below it)."""
        want = tuple(path)
        for read in self.input_reads:
            n = min(len(read), len(want))
            if read[:n] == want[:n]:
                return True
        return False


def _span_line(node: Any) -> int:
    if isinstance(node, dict):
        span = node.get("span")
        if isinstance(span, dict) and isinstance(span.get("line"), int):
            return int(span["line"])
        for value in node.values():
            if isinstance(value, dict):
                line = _span_line(value)
                if line:
                    return line
    return 0


def static_ref(node: Any) -> tuple[list[str], bool] | None:
    """(segments, fully static) of a Var / RefDot / RefBrack chain; None for anything
    else. A bracket with a string literal is static; any other bracket ends the static
    prefix (fully static False)."""
    if not isinstance(node, dict) or len(node) != 1:
        return None
    kind, body = next(iter(node.items()))
    if kind == "Var":
        return [str(body.get("value", ""))], True
    if kind == "RefDot":
        inner = static_ref(body.get("refr"))
        if inner is None:
            return None
        segs, full = inner
        fld = body.get("field")
        name = fld[1] if isinstance(fld, list) and len(fld) == 2 else None
        if full and isinstance(name, str):
            return segs + [name], True
        return segs, False
    if kind == "RefBrack":
        inner = static_ref(body.get("refr"))
        if inner is None:
            return None
        segs, full = inner
        index = body.get("index")
        if full and isinstance(index, dict) and "String" in index:
            return segs + [str(index["String"].get("value", ""))], True
        return segs, False
    return None


def _chain_root(node: Any) -> Any:
    while isinstance(node, dict) and len(node) == 1:
        kind, body = next(iter(node.items()))
        if kind in ("RefDot", "RefBrack"):
            node = body.get("refr")
            continue
        return node
    return node


def _dynamic_indexes(node: Any) -> Iterator[Any]:
    """The index expressions of a ref chain (to walk them for calls and reads)."""
    while isinstance(node, dict) and len(node) == 1:
        kind, body = next(iter(node.items()))
        if kind == "RefBrack":
            yield body.get("index")
            node = body.get("refr")
        elif kind == "RefDot":
            node = body.get("refr")
        else:
            return


class _Module:
    def __init__(self, facts: Facts, file: str, package: list[str],
                 local_names: set[str], aliases: set[str]) -> None:
        self.facts = facts
        self.file = file
        self.package = package
        self.local_names = local_names  # first segment of every rule head here
        self.aliases = aliases  # import aliases (data.x.y as z, or the last segment)

    def site(self, node: Any) -> Site:
        return Site(self.file, _span_line(node))

    def walk(self, node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                self.walk(item)
            return
        if not isinstance(node, dict):
            return
        if len(node) == 1:
            kind, body = next(iter(node.items()))
            if kind in ("RefDot", "RefBrack", "Var") and isinstance(body, dict):
                self.ref(node)
                return
            if kind == "Call" and isinstance(body, dict):
                self.call(body)
                return
        if "with_mods" in node and isinstance(node["with_mods"], list):
            for mod in node["with_mods"]:
                self.with_mod(mod)
        for key, value in node.items():
            if key in ("span", "with_mods"):
                continue
            self.walk(value)

    def ref(self, node: Any) -> None:
        root = _chain_root(node)
        if isinstance(root, dict) and "Var" in root and \
                root["Var"].get("value") == "input":
            parsed = static_ref(node)
            segs = parsed[0] if parsed else ["input"]
            self.facts.input_reads.add(tuple(segs[1:]))
        elif not (isinstance(root, dict) and "Var" in root):
            self.walk(root)  # a call or literal at the root of a ref
        for index in _dynamic_indexes(node):
            self.walk(index)

    def call(self, body: dict[str, Any]) -> None:
        fcn = body.get("fcn")
        parsed = static_ref(fcn)
        if parsed is None or not parsed[1]:
            self.facts.problems.append(
                f"{self.site(body)}: call: the function is not a plain name")
        else:
            name = ".".join(parsed[0])
            first = parsed[0][0]
            if first not in ("data",) and first not in self.local_names \
                    and first not in self.aliases:
                self.builtin(name, body)
        self.walk(body.get("params"))

    def builtin(self, name: str, node: Any) -> None:
        site = self.site(node)
        self.facts.builtins.setdefault(name, site)
        if name not in ALLOWED_BUILTINS:
            why = "not supported by the embedded engine" if name in _UNSUPPORTED else \
                "not on the embedded engine's builtin allowlist"
            self.facts.problems.append(f"{site}: builtin {name}: {why}")

    def with_mod(self, mod: Any) -> None:
        if not isinstance(mod, dict):
            return
        target = static_ref(mod.get("refr"))
        root = target[0][0] if target else ""
        if root == "input":
            self.facts.input_reads.add(())
        elif root != "data":
            self.facts.problems.append(
                f"{self.site(mod)}: with {'.'.join(target[0]) if target else '?'}: "
                "`with` may replace only input or data in the embedded engine")
        self.walk(mod.get("as"))


# Names OPA has that regorus does not implement (or implements so differently that a
# policy relying on them must not load). Only for the wording of the refusal.
_UNSUPPORTED = frozenset({
    "http.send", "rego.metadata.rule", "rego.metadata.chain", "strings.render_template",
    "opa.runtime", "net.lookup_ip_addr", "trace", "rego.parse_module",
    "providers.aws.sign_req", "crypto.x509.parse_certificates", "io.jwt.decode_verify",
    "uri.parse",
})


def _head_ref(rule: Mapping[str, Any]) -> tuple[Any, Any]:
    if "Default" in rule:
        d = rule["Default"]
        return d.get("refr"), d
    spec = rule.get("Spec", {})
    head = spec.get("head", {})
    for variant in head.values():
        if isinstance(variant, dict):
            return variant.get("refr"), spec
    return None, spec


def analyze(ast_json: str) -> Facts:
    facts = Facts()
    modules = json.loads(ast_json)
    for module in modules:
        file = str(module.get("source", {}).get("file", "?"))
        ast = module.get("ast", {})
        pkg = static_ref(ast.get("package", {}).get("refr"))
        package = pkg[0] if pkg else []
        rules = ast.get("rules", []) or []
        local: set[str] = set()
        for rule in rules:
            refr, _ = _head_ref(rule)
            parsed = static_ref(refr)
            if parsed:
                local.add(parsed[0][0])
        aliases: set[str] = set()
        for imp in ast.get("imports", []) or []:
            target = static_ref(imp.get("refr"))
            alias = imp.get("as")
            name = alias if isinstance(alias, str) else (target[0][-1] if target else "")
            if target and target[0][0] == "input":
                facts.input_reads.add(())
            if target and target[0][0] in ("data", "input"):
                aliases.add(name)
        mod = _Module(facts, file, package, local, aliases)
        for rule in rules:
            refr, body = _head_ref(rule)
            parsed = static_ref(refr)
            if parsed:
                path = ("data", *package, *parsed[0])
                facts.rules.setdefault(path, Site(file, _span_line(body)))
            mod.walk(rule)
    return facts


def data_conflicts(facts: Facts, data: Any) -> list[str]:
    """Rules whose path the data document also defines (or passes through a leaf)."""
    out = []
    for path, site in sorted(facts.rules.items(), key=lambda kv: (kv[1].file, kv[1].line)):
        node: Any = data
        for depth, seg in enumerate(path[1:], start=1):
            if not isinstance(node, dict):
                out.append(f"{site}: rule {'.'.join(path)}: conflicts with data at "
                           f"{'.'.join(path[:depth])} (not an object)")
                break
            if seg not in node:
                break
            node = node[seg]
            if depth == len(path) - 1:
                out.append(f"{site}: rule {'.'.join(path)}: conflicts with a data document "
                           "at the same path (OPA refuses this: conflicting rules)")
    return out


def missing_decision(facts: Facts, decision_path: str) -> str | None:
    """None when some rule defines the decision path (data.a.b.c): the rule itself, a
    rule above it (an object rule or a ref head), or a package below it."""
    want = ("data", *decision_path.split("/"))
    for path in facts.rules:
        n = min(len(path), len(want))
        if path[:n] == want[:n]:
            return None
    return (f"decision_path {decision_path}: no rule defines data."
            f"{decision_path.replace('/', '.')} in the loaded modules")
