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
- a decision path that no rule defines;
- numbers regorus computes differently from OPA (see `_Module.number` and
  `_Module.arith`): a number literal that is not a plain integer below 2^53 (`1.0`,
  `0.5`, `1e3`), the `/` and `*` operators, and `+` / `-` unless the magnitude of the
  result is bounded below 2^63 by its operands (integer literals, `count(...)`, `%`
  with such a side, nested `+` / `-` of those) or one operand is a set literal or set
  comprehension (then it is set difference or an error, never a number);
- the order between an object and a set (regorus puts a set first, OPA an object: see
  `_SetOrder`): a set whose element, or an object whose key, may hold a set; `<` `<=`
  `>` `>=` on operands that may hold a set unless one is a scalar by construction;
  max / min / sort over elements that may hold a set.

It also records what the modules read of `input` (`Facts.input_reads`): the static
path of every `input...` reference, `()` for a read of the whole document (a bare
`input`, a dynamic index, `some x in input`, `with input`, an `import input...`). The
decision cache uses it only to decide whether `request.id` / `request.time` may be left
out of the key; any doubt counts as a read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# Builtins the embedded engine may call. Each one is exercised by the OPA 0.61 vectors
# (/work/shared/opa-vectors, tests/policy/test_opa_vectors.py) and regorus agrees with
# OPA on them, or differs only in the safe direction (an error, so 503, where OPA gives
# a value): see "Differences from OPA" in docs/rego-authors.md. Anything else is refused
# at load. Operators (==, +, in, ...) are not calls and are not listed.
ALLOWED_BUILTINS: frozenset[str] = frozenset(
    {
        # aggregates / arrays / sets (count/max/sort: see "Differences from OPA"). No
        # `sum`: a fold of unbounded length could leave the range where regorus's integers
        # are exact (see `_Module.arith`); max/min/count only select or count.
        "count",
        "max",
        "min",
        "sort",
        "array.concat",
        "array.slice",
        "array.reverse",
        # types
        "type_name",
        "is_array",
        "is_boolean",
        "is_null",
        "is_number",
        "is_object",
        "is_set",
        "is_string",
        # numbers
        "abs",
        "ceil",
        "floor",
        "round",
        # strings
        "concat",
        "contains",
        "endswith",
        "startswith",
        "replace",
        "split",
        "substring",
        "trim",
        "trim_left",
        "trim_right",
        "trim_prefix",
        "trim_suffix",
        "trim_space",
        "strings.reverse",
        # objects
        "object.get",
        "object.keys",
        "object.remove",
        "object.union",
        "object.union_n",
        "object.filter",
        "json.patch",
        # encoding
        # Not base64.decode / base64.is_valid / base64url.decode (Go skips newlines and
        # refuses data after padding, the Rust crate the reverse):
        # tests/policy/test_review11_base64.py.
        # Not json.is_valid (Go's json.Valid is syntax only: "1e400" valid; serde_json
        # refuses it): tests/policy/test_review11_json_is_valid.py.
        "base64.encode",
        "base64url.encode",
        "base64url.encode_no_pad",
        "hex.encode",
        # Not urlquery.encode / encode_object (regorus keeps `*` and escapes `~`, Go's
        # url.QueryEscape the reverse), nor any regex.* (Rust's \w \d \s are Unicode,
        # RE2's ASCII): tests/policy/test_review11_builtins.py.
        # Not semver.* (OPA parses with ParseInt: "01.2.3" valid, a 2^63 major not; the
        # Rust semver crate the reverse): tests/policy/test_review11_semver.py.
        # graphs, walk
        "graph.reachable",
        "graph.reachable_paths",
        "walk",
    }
)

_NOT_DEFINED = "rule"  # construct names used in messages

# regorus's `count` of a STRING counts UTF-16 code units where OPA counts code points:
# count("a\U0001F600") is 3 in regorus, 2 in OPA. Which argument is a string is not
# known at load, so a policy that calls `count` never meets a character beyond U+FFFF:
# refused in its modules and data at load, and in its input per request (503,
# engine.INPUT_STRING). Other string builtins on the allowlist work on code points.
ASTRAL = re.compile(
    "[\U00010000-\U0010ffff]"  # the character itself, or a JSON/Rego escape
    r"|\\u[dD][89abAB][0-9a-fA-F]{2}"
)  # of its high surrogate


def holds_astral(text: str) -> bool:
    """ASTRAL found in `text`. ASCII text without a `\\u` escape cannot hold one: that
    test is a flag read and a memchr, where the regex walks every character (about
    25 µs on a request's input, on every decision the cache does not answer)."""
    if text.isascii() and "\\u" not in text:
        return False
    return ASTRAL.search(text) is not None


def astral_problem(facts: Facts, modules: Sequence[tuple[str, str]], data_json: str) -> str | None:
    """Why these modules and data may not load (None: they may): see ASTRAL."""
    if "count" not in facts.builtins:
        return None
    for path, text in modules:
        found = ASTRAL.search(text)
        if found:
            line = text.count("\n", 0, found.start()) + 1
            return (
                f"{path}:{line}: a character beyond U+FFFF in a policy that calls "
                "count (the embedded engine counts it twice; OPA once)"
            )
    if ASTRAL.search(data_json):
        return (
            "data: a string holds a character beyond U+FFFF and the policy calls count "
            "(the embedded engine counts it twice; OPA once)"
        )
    return None


_INT_LITERAL = re.compile(r"-?(0|[1-9][0-9]*)")
_LITERAL_LIMIT = 1 << 53  # as data and input: every leaf number is below it
_ARITH_LIMIT = 1 << 63  # regorus's integers are exact in i64 (and u64)


def _is_set_term(node: Any, set_rules: frozenset[str] = frozenset()) -> bool:
    """A term whose value is a set (or undefined): a set literal, a set comprehension,
    `|` / `&` (set-only operators), or a rule of this module every definition of which
    is one of those (`set_rules`, never a name the module also binds locally)."""
    if not isinstance(node, dict) or len(node) != 1:
        return False
    kind, body = next(iter(node.items()))
    if kind in ("Set", "SetCompr", "BinExpr"):
        return True
    return kind == "Var" and isinstance(body, dict) and body.get("value") in set_rules


def _vars(node: Any) -> Iterator[str]:
    """Plain variable names in a term, inside arrays, objects and sets (where a
    unification can bind them)."""
    if not isinstance(node, dict) or len(node) != 1:
        return
    kind, body = next(iter(node.items()))
    if kind == "Var" and isinstance(body, dict):
        yield str(body.get("value", ""))
    elif kind in ("Array", "Set") and isinstance(body, dict):
        for item in body.get("items") or []:
            yield from _vars(item)
    elif kind == "Object" and isinstance(body, dict):
        for field_ in body.get("fields") or []:
            for part in field_ if isinstance(field_, list) else []:
                yield from _vars(part)


def _binders(node: Any, source: bytes) -> Iterator[str]:
    """Every name the module may bind as a local variable (conservatively: both sides
    of `=`, the output argument of a call with two or more arguments, `some`, `every`,
    function arguments)."""
    if isinstance(node, list):
        for item in node:
            yield from _binders(item, source)
        return
    if not isinstance(node, dict):
        return
    if len(node) == 1:
        kind, body = next(iter(node.items()))
        if isinstance(body, dict):
            if kind == "AssignExpr":
                yield from _vars(body.get("lhs"))
                if body.get("op") != "ColEq":
                    yield from _vars(body.get("rhs"))
            elif kind == "SomeIn":
                yield from _vars(body.get("key"))
                yield from _vars(body.get("value"))
            elif kind == "Call":
                params = body.get("params") or []
                if len(params) >= 2:
                    yield from _vars(params[-1])
            elif kind == "Func":
                for arg in body.get("args") or []:
                    yield from _vars(arg)
            elif kind in ("SomeVars", "Every"):
                spans = list(body.get("vars") or []) + [body.get("key"), body.get("value")]
                for span in spans:
                    if isinstance(span, dict) and isinstance(span.get("start"), int):
                        yield source[span["start"] : span.get("end", 0)].decode("utf-8", "replace")
    for key, value in node.items():
        if key != "span":
            yield from _binders(value, source)


def _set_rules(rules: Sequence[Any], source: bytes) -> frozenset[str]:
    """Names of this module's single-segment rules whose every definition is a set:
    a partial set rule (`contains`), or a value (and every `else` value) that is a set
    term. Names also bound as local variables anywhere in the module are left out."""
    kinds: dict[str, bool] = {}
    for rule in rules:
        refr, spec = _head_ref(rule)
        parsed = static_ref(refr)
        if not parsed or len(parsed[0]) != 1 or not parsed[1]:
            continue
        name = parsed[0][0]
        ok = False
        if "Default" in rule:
            ok = _is_set_term(rule["Default"].get("value"))
        else:
            head = spec.get("head", {}) if isinstance(spec, dict) else {}
            if "Set" in head:
                ok = True
            elif "Compr" in head and isinstance(head["Compr"], dict):
                assign = head["Compr"].get("assign")
                ok = isinstance(assign, dict) and _is_set_term(assign.get("value"))
            for body in (spec.get("bodies") or []) if ok else []:
                extra = body.get("assign") if isinstance(body, dict) else None
                if extra is not None and not (
                    isinstance(extra, dict) and _is_set_term(extra.get("value"))
                ):
                    ok = False
        kinds[name] = kinds.get(name, True) and ok
    bound = set(_binders(rules, source))
    return frozenset(n for n, ok in kinds.items() if ok and n not in bound)


def _bound(node: Any, shadowed: set[str]) -> int | None:
    """An upper bound on the magnitude of an integer term's value, or None when the
    term alone does not bound it. Literals and count(...) are below 2^53 (literals are
    checked; a count of anything in memory is far below it). `shadowed`: names the
    module defines or imports (a `count` of its own is not the builtin)."""
    if not isinstance(node, dict) or len(node) != 1:
        return None
    kind, body = next(iter(node.items()))
    if not isinstance(body, dict):
        return None
    if kind == "Number":
        return _LITERAL_LIMIT
    if kind == "Call":
        parsed = static_ref(body.get("fcn"))
        if parsed is not None and parsed[1] and parsed[0] == ["count"] and "count" not in shadowed:
            return _LITERAL_LIMIT
        return None
    if kind == "ArithExpr":
        op = body.get("op")
        left = _bound(body.get("lhs"), shadowed)
        right = _bound(body.get("rhs"), shadowed)
        if op in ("Add", "Sub"):
            return None if left is None or right is None else left + right
        if op == "Mod":  # |a % b| <= |a| and < |b|
            known = [b for b in (left, right) if b is not None]
            return min(known) if known else None
    return None


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


_COMPREHENSIONS = ("ArrayCompr", "SetCompr", "ObjectCompr")


def _shallow(node: Any) -> Iterator[dict[str, Any]]:
    """Every single-key node under `node`, not entering comprehensions."""
    if isinstance(node, list):
        for item in node:
            yield from _shallow(item)
        return
    if not isinstance(node, dict):
        return
    if len(node) == 1:
        kind = next(iter(node))
        if kind in _COMPREHENSIONS:
            return
        yield node
    for key, value in node.items():
        if key != "span":
            yield from _shallow(value)


def _has_dynamic(refr: Any) -> bool:
    parsed = static_ref(refr)
    return parsed is not None and not parsed[1]


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
    def __init__(
        self,
        facts: Facts,
        file: str,
        package: list[str],
        local_names: set[str],
        aliases: set[str],
        source: bytes = b"",
    ) -> None:
        self.facts = facts
        self.file = file
        self.source = source  # the module text (UTF-8): spans are byte offsets into it
        self.package = package
        self.local_names = local_names  # first segment of every rule head here
        self.aliases = aliases  # import aliases (data.x.y as z, or the last segment)
        self.ref_head_names: set[str] = set()  # rules defined with a ref head (a.b := ..)
        self.set_rules: frozenset[str] = frozenset()  # rules whose value is a set
        self.alias_targets: dict[str, tuple[str, ...]] = {}  # import alias -> data path
        # calls through a local rule name, an import alias or data: (path, name, node),
        # checked as builtins unless a rule defines the path (`resolve_calls`)
        self.unresolved: list[tuple[tuple[str, ...], str, Any]] = []

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
            if kind == "Number" and isinstance(body, dict):
                self.number(body)
                return
            if kind == "ArithExpr" and isinstance(body, dict):
                self.arith(body)
        if len(node) == 1:
            kind, body = next(iter(node.items()))
            if kind == "NotExpr" and isinstance(body, dict):
                self.negation(body)
            elif kind == "Every" and isinstance(body, dict):
                self.every(body)
        if "with_mods" in node and isinstance(node["with_mods"], list):
            for mod in node["with_mods"]:
                self.with_mod(mod)
        for key, value in node.items():
            if key in ("span", "with_mods"):
                continue
            self.walk(value)

    def is_ref(self, node: Any) -> bool:
        """A value that can be undefined by itself: a ref with a field or index, input,
        data, or a rule of this module."""
        if not isinstance(node, dict) or len(node) != 1:
            return False
        kind, body = next(iter(node.items()))
        if kind in ("RefDot", "RefBrack"):
            return True
        return (
            kind == "Var"
            and isinstance(body, dict)
            and (
                body.get("value") in ("input", "data")
                or body.get("value") in self.local_names
                or body.get("value") in self.aliases
            )
        )  # `import input.user.team as t`

    def negation(self, body: dict[str, Any]) -> None:
        """OPA binds a call's (and `in`'s) reference arguments before `not`: with the
        argument undefined the negation is undefined; regorus makes it true. Refused,
        with the fix in the message. Likewise `not` of a ref into rules with a dynamic
        key (regorus and OPA disagree on ref-head rules there)."""
        expr = body.get("expr")
        for node in _shallow(expr):
            kind, inner = next(iter(node.items()))
            args: list[Any] = []
            if kind == "Call":
                args = list(inner.get("params") or [])
            elif kind == "Membership":
                args = [inner.get("key"), inner.get("value"), inner.get("collection")]
            if any(self.is_ref(a) for a in args):
                self.facts.problems.append(
                    f"{self.site(body)}: not: a call or `in` on a reference under `not` "
                    "(undefined in OPA when the reference is; bind it first: "
                    "`x := input.a; not f(x)`)"
                )
                return
        if isinstance(expr, dict) and len(expr) == 1 and next(iter(expr)) in ("RefDot", "RefBrack"):
            root = _chain_root(expr)
            dynamic = static_ref(expr)
            # through `data.` or an import alias the rule may be another module's
            # ref-head rule: refused alike (bind the key first)
            if (
                isinstance(root, dict)
                and "Var" in root
                and (
                    root["Var"].get("value") in self.ref_head_names
                    or root["Var"].get("value") == "data"
                    or root["Var"].get("value") in self.aliases
                )
                and dynamic is not None
                and not dynamic[1]
            ):
                self.facts.problems.append(
                    f"{self.site(body)}: not: a rule read with a dynamic key under `not` "
                    "(the embedded engine differs from OPA on ref-head rules here)"
                )

    def every(self, body: dict[str, Any]) -> None:
        domain = body.get("domain")
        kind = next(iter(domain)) if isinstance(domain, dict) and len(domain) == 1 else ""
        if kind not in ("Array", "Set", "Object", "ArrayCompr", "SetCompr", "ObjectCompr"):
            self.facts.problems.append(
                f"{self.site(body)}: every: over a reference or variable (on a value that "
                "is not a collection OPA is true, the embedded engine undefined); iterate "
                "a literal or a comprehension, e.g. `every x in [x | some x in input.xs]`"
            )

    def number(self, body: dict[str, Any]) -> None:
        """A number literal must be a plain integer below 2^53 in magnitude, written as
        such (`-?(0|[1-9][0-9]*)`). regorus's AST gives the parsed value (1.0 and 1
        alike), so the literal is read from the module text at the node's byte span.

        Why: a non-integer number is a float64 in regorus and an exact decimal in OPA
        (`0.1 * 3 <= 0.3` differs; a set holds 1 and 1.0 as one element, OPA as two;
        `a[1.0]` selects an element, OPA: undefined). With no non-integer literal, no
        non-integer in data (loader) or input (503, embedded.unsupported_number) and
        no `/` (see `arith`), no non-integer number exists during evaluation. The 2^53
        bound is the one data and input have, and it bounds the arithmetic below."""
        span = body.get("span")
        text = ""
        if (
            isinstance(span, dict)
            and isinstance(span.get("start"), int)
            and isinstance(span.get("end"), int)
        ):
            text = self.source[span["start"] : span["end"]].decode("utf-8", "replace")
        shown = text[:30] if text else "?"
        if not _INT_LITERAL.fullmatch(text):
            self.facts.problems.append(
                f"{self.site(body)}: number {shown}: only integer literals (the embedded "
                "engine computes non-integers in float64, OPA in exact decimals; scale "
                "to integers, e.g. percent instead of 0.5)"
            )
        elif not -_LITERAL_LIMIT < int(text) < _LITERAL_LIMIT:
            self.facts.problems.append(
                f"{self.site(body)}: number {shown}: integers from 2^53 on are refused "
                "(the embedded engine may round them)"
            )

    def arith(self, body: dict[str, Any]) -> None:
        """Integer arithmetic stays inside the range where regorus is exact (it holds
        integers as i64/u64 and turns an overflowing result into a float64; OPA stays
        exact). Every number that enters evaluation is an integer below 2^53 in
        magnitude (literals: `number`; data: loader; input: embedded); builtins on the
        allowlist make numbers only by counting or selecting (count, max, min, abs,
        round, ceil, floor on integers, semver.compare, array indexes); `sum` is not
        allowed. So the operators are the only way out of the range:
        - `/` makes non-integers from integers: refused;
        - `*` squares magnitudes (2^32 * 2^32 rounds): refused;
        - `%` never grows a magnitude (|a % b| <= |a|): allowed;
        - `+` / `-` allowed only when `_bound` proves the result below 2^63 from its
          operands alone (variables and references can carry earlier sums, so a
          chain of them has no static bound), or when an operand is a set literal or
          a set comprehension (set difference, or an error in both engines)."""
        op = body.get("op")
        if op in ("Div", "Mul"):
            sign = "/" if op == "Div" else "*"
            self.facts.problems.append(
                f"{self.site(body)}: operator {sign}: refused (the embedded engine's "
                + (
                    "division gives float64 where OPA is exact"
                    if op == "Div"
                    else "products can leave the range where its integers are exact"
                )
                + "; precompute the value in data)"
            )
            return
        if op not in ("Add", "Sub"):
            return
        lhs, rhs = body.get("lhs"), body.get("rhs")
        if _is_set_term(lhs, self.set_rules) or _is_set_term(rhs, self.set_rules):
            return
        bound = _bound({"ArithExpr": body}, self.local_names | self.aliases)
        if bound is None or bound >= _ARITH_LIMIT:
            sign = "+" if op == "Add" else "-"
            self.facts.problems.append(
                f"{self.site(body)}: operator {sign}: an operand is not an integer literal, "
                "count(...) or a sum of those (a variable or reference may hold a result "
                "past the range where the embedded engine's integers are exact); for "
                "set difference write a set comprehension, `{x | some x in a; not b[x]}`"
            )

    def head(self, rule: Any) -> None:
        """`deny contains f.reason if ...`: a head term that is a ref can be undefined
        for one element; regorus then drops the whole set, OPA only that element."""
        spec = rule.get("Spec") if isinstance(rule, dict) else None
        head = spec.get("head", {}) if isinstance(spec, dict) else {}
        for kind, variant in head.items():
            if not isinstance(variant, dict):
                continue
            terms = []
            if kind == "Set":
                terms.append(variant.get("key"))
            refr = variant.get("refr")
            for index in _dynamic_indexes(refr):
                terms.append(index)
            assign = variant.get("assign")
            if kind == "Compr" and isinstance(assign, dict) and _has_dynamic(refr):
                terms.append(assign.get("value"))
            for term in terms:
                if (
                    isinstance(term, dict)
                    and len(term) == 1
                    and next(iter(term)) in ("RefDot", "RefBrack")
                ):
                    self.facts.problems.append(
                        f"{self.site(spec)}: rule head: a reference as the key or value of "
                        "a partial rule (bind it in the body: `r := f.reason`)"
                    )
                    return

    def ref(self, node: Any) -> None:
        root = _chain_root(node)
        if isinstance(root, dict) and "Var" in root and root["Var"].get("value") == "input":
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
            self.facts.problems.append(f"{self.site(body)}: call: the function is not a plain name")
        else:
            name = ".".join(parsed[0])
            first = parsed[0][0]
            if first == "data":
                target: tuple[str, ...] | None = tuple(parsed[0])
            elif first in self.local_names:
                target = ("data", *self.package, *parsed[0])
            elif first in self.alias_targets:
                target = (*self.alias_targets[first], *parsed[0][1:])
            else:
                target = None
            if target is None:
                self.builtin(name, body)
            else:
                # A user function only if some module defines exactly this path:
                # regorus calls the builtin for `regex.match(...)` beside a rule
                # `regex.x := 1` or under `import data.nothing as regex`.
                self.unresolved.append((target, name, body))
        self.walk(body.get("params"))

    def builtin(self, name: str, node: Any) -> None:
        site = self.site(node)
        self.facts.builtins.setdefault(name, site)
        if name not in ALLOWED_BUILTINS:
            why = (
                "not supported by the embedded engine"
                if name in _UNSUPPORTED
                else "not on the embedded engine's builtin allowlist"
            )
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
                "`with` may replace only input or data in the embedded engine"
            )
        self.walk(mod.get("as"))


# Names OPA has that regorus does not implement (or implements so differently that a
# policy relying on them must not load). Only for the wording of the refusal.
_UNSUPPORTED = frozenset(
    {
        "http.send",
        "rego.metadata.rule",
        "rego.metadata.chain",
        "strings.render_template",
        "opa.runtime",
        "net.lookup_ip_addr",
        "trace",
        "rego.parse_module",
        "providers.aws.sign_req",
        "crypto.x509.parse_certificates",
        "io.jwt.decode_verify",
        "uri.parse",
        "regex.match",
        "regex.is_valid",
        "regex.split",
        "regex.find_n",
        "regex.replace",
        "urlquery.encode",
        "urlquery.encode_object",
        "semver.is_valid",
        "semver.compare",
        "base64.decode",
        "base64.is_valid",
        "base64url.decode",
        "json.is_valid",
    }
)


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
    modules_seen: list[_Module] = []
    module_rules: list[tuple[_Module, list[Any]]] = []
    for module in modules:
        file = str(module.get("source", {}).get("file", "?"))
        contents = module.get("source", {}).get("contents")
        source = contents.encode("utf-8") if isinstance(contents, str) else b""
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
        alias_targets: dict[str, tuple[str, ...]] = {}
        for imp in ast.get("imports", []) or []:
            target = static_ref(imp.get("refr"))
            alias = imp.get("as")
            if isinstance(alias, dict) and isinstance(alias.get("start"), int):
                # regorus gives the alias as a span into the module text
                alias = source[alias["start"] : alias.get("end", 0)].decode("utf-8", "replace")
            name = alias if isinstance(alias, str) else (target[0][-1] if target else "")
            if target and target[0][0] == "input":
                facts.input_reads.add(())
            if target and target[0][0] in ("data", "input"):
                aliases.add(name)
                if target[1]:
                    alias_targets[name] = tuple(target[0])
        mod = _Module(facts, file, package, local, aliases, source)
        mod.alias_targets = alias_targets
        modules_seen.append(mod)
        module_rules.append((mod, [r for r in rules if isinstance(r, dict)]))
        mod.set_rules = _set_rules(rules, source)
        for rule in rules:
            parsed = static_ref(_head_ref(rule)[0])
            if parsed and (len(parsed[0]) > 1 or not parsed[1]):
                mod.ref_head_names.add(parsed[0][0])
        for rule in rules:
            refr, body = _head_ref(rule)
            parsed = static_ref(refr)
            if parsed:
                path = ("data", *package, *parsed[0])
                facts.rules.setdefault(path, Site(file, _span_line(body)))
            mod.head(rule)
            mod.walk(rule)
    for mod in modules_seen:
        for path, name, node in mod.unresolved:
            if path not in facts.rules:
                mod.builtin(name, node)
    facts.problems.extend(_SetOrder(module_rules).run())
    return facts


def data_conflicts(facts: Facts, data: Any) -> list[str]:
    """Rules whose path the data document also defines (or passes through a leaf)."""
    out = []
    for path, site in sorted(facts.rules.items(), key=lambda kv: (kv[1].file, kv[1].line)):
        node: Any = data
        for depth, seg in enumerate(path[1:], start=1):
            if not isinstance(node, dict):
                out.append(
                    f"{site}: rule {'.'.join(path)}: conflicts with data at "
                    f"{'.'.join(path[:depth])} (not an object)"
                )
                break
            if seg not in node:
                break
            node = node[seg]
            if depth == len(path) - 1:
                out.append(
                    f"{site}: rule {'.'.join(path)}: conflicts with a data document "
                    "at the same path (OPA refuses this: conflicting rules)"
                )
    return out


def missing_decision(facts: Facts, decision_path: str) -> str | None:
    """None when some rule defines the decision path (data.a.b.c): the rule itself, a
    rule above it (an object rule or a ref head), or a package below it."""
    want = ("data", *decision_path.split("/"))
    for path in facts.rules:
        n = min(len(path), len(want))
        if path[:n] == want[:n]:
            return None
    return (
        f"decision_path {decision_path}: no rule defines data."
        f"{decision_path.replace('/', '.')} in the loaded modules"
    )


# ---------------------------------------------------------------------------------------
# The order between an object and a set. OPA orders null < booleans < numbers < strings <
# arrays < objects < sets (ast/compare.go, sortOrder); regorus derives Ord on its Value
# enum, whose variants read ... Array, Set, Object (src/value.rs), so it orders a set
# BEFORE an object. Everything else about the two orders agrees on the values the other
# checks leave (integers below 2^53, strings compared bytewise, arrays and sets and
# objects lexicographically over their sorted elements / (key, value) pairs). So two
# values compare differently only where one holds a set and the other an object at the
# same position; a set is iterated (and serialized) in a different order only if its
# elements are such values; an object likewise if its keys are.
#
# Sets never come from input or data (JSON has none): only from the policy. `_SetOrder`
# infers, for every term, at which depths its value may hold a set (a bit mask: bit d
# for depth d below the term's root, the last bit for any depth from _DEPTHS on), by a
# flow-insensitive fixpoint over all modules (variables per rule, rule values per data
# path, function parameters per call site, `with` replacements). It refuses:
# - a set whose element, or an object whose key, may hold a set (literal,
#   comprehension, partial set rule, rule head key, graph.reachable nodes, json.patch);
#   with none of those, every set and object iterates in the same order in both engines;
# - `<` `<=` `>` `>=` unless an operand is a scalar by construction (literal, count(...),
#   arithmetic other than `-`, ...) or neither operand may hold a set;
# - max / min / sort of a collection whose elements may hold a set.
# ---------------------------------------------------------------------------------------

_DEPTHS = 6
_CAP = 1 << _DEPTHS  # "a set somewhere at depth >= _DEPTHS"
_ANY = (_CAP << 1) - 1  # no knowledge: a set may be anywhere


def _wrap(t: int) -> int:
    """The mask of a collection holding a value of mask `t` as an element."""
    shifted = t << 1
    return (shifted & (_CAP - 1)) | (_CAP if shifted >= _CAP else 0)


def _elem(t: int) -> int:
    """The mask of an element (or key) of a value of mask `t`."""
    return (t >> 1) | (t & _CAP)


def _below(t: int) -> int:
    """The mask of any value strictly inside a value of mask `t`."""
    out = 0
    for _ in range(_DEPTHS + 1):
        t = _elem(t)
        out |= t
    return out


# Builtins on the allowlist: (arity, mask of the result from the masks of the arguments).
_BUILTIN_TYPES: Mapping[str, tuple[int, Callable[[list[int]], int]]] = MappingProxyType(
    {
        "max": (1, lambda a: _elem(a[0])),
        "min": (1, lambda a: _elem(a[0])),
        "sort": (1, lambda a: _wrap(_elem(a[0]))),
        "array.concat": (2, lambda a: _wrap(_elem(a[0]) | _elem(a[1]))),
        "array.slice": (3, lambda a: _wrap(_elem(a[0]))),
        "array.reverse": (1, lambda a: _wrap(_elem(a[0]))),
        "object.get": (3, lambda a: _below(a[0]) | a[2]),
        "object.keys": (1, lambda a: 1),  # keys never hold a set (refused where made)
        "object.remove": (2, lambda a: _wrap(_elem(a[0]))),
        "object.union": (2, lambda a: _wrap(_elem(a[0]) | _elem(a[1]))),
        "object.union_n": (1, lambda a: _wrap(_elem(_elem(a[0])))),
        "object.filter": (2, lambda a: _wrap(_elem(a[0]))),
        "json.patch": (2, lambda a: _ANY if a[0] | a[1] else 0),
        "graph.reachable": (2, lambda a: 1),  # nodes checked in `_SetOrder.call`
        "graph.reachable_paths": (2, lambda a: 1),
        "walk": (1, lambda a: _wrap(a[0] | _below(a[0]))),
        "split": (2, lambda a: 0),  # an array of strings
    }
)
# Builtins on the allowlist whose result is a number, string, boolean or null: name ->
# arity. Any other builtin (none loads: see ALLOWED_BUILTINS) may return anything.
_SCALAR_BUILTINS: Mapping[str, int] = MappingProxyType(
    {
        "count": 1,
        "type_name": 1,
        "is_array": 1,
        "is_boolean": 1,
        "is_null": 1,
        "is_number": 1,
        "is_object": 1,
        "is_set": 1,
        "is_string": 1,
        "abs": 1,
        "ceil": 1,
        "floor": 1,
        "round": 1,
        "concat": 2,
        "contains": 2,
        "endswith": 2,
        "startswith": 2,
        "replace": 3,
        "substring": 3,
        "trim": 2,
        "trim_left": 2,
        "trim_right": 2,
        "trim_prefix": 2,
        "trim_suffix": 2,
        "trim_space": 1,
        "strings.reverse": 1,
        "base64.encode": 1,
        "base64url.encode": 1,
        "base64url.encode_no_pad": 1,
        "hex.encode": 1,
    }
)
_ORDERING: Mapping[str, str] = MappingProxyType({"Lt": "<", "Le": "<=", "Gt": ">", "Ge": ">="})
_SET_BIAS = "the embedded engine orders a set before an object, OPA after"


def _ref_chain(node: Any) -> tuple[Any, list[Any]]:
    """(root, segments) of a ref: each segment a field name (str) or an index term."""
    segments: list[Any] = []
    while isinstance(node, dict) and len(node) == 1:
        kind, body = next(iter(node.items()))
        if kind == "RefDot" and isinstance(body, dict):
            fld = body.get("field")
            segments.append(fld[1] if isinstance(fld, list) and len(fld) == 2 else None)
            node = body.get("refr")
        elif kind == "RefBrack" and isinstance(body, dict):
            index = body.get("index")
            if isinstance(index, dict) and "String" in index:
                segments.append(str(index["String"].get("value", "")))
            else:
                segments.append({"index": index})
            node = body.get("refr")
        else:
            break
    segments.reverse()
    return node, segments


class _SetOrder:
    """The fixpoint described above; `problems` after `run`."""

    def __init__(self, modules: Sequence[tuple[_Module, list[Any]]]) -> None:
        self.modules = modules
        self.rule_types: dict[tuple[str, ...], int] = {}
        self.functions: dict[tuple[str, ...], int] = {}  # path -> arity
        self.func_ret: dict[tuple[str, ...], int] = {}
        self.func_params: dict[tuple[str, ...], list[int]] = {}
        self.input_type = 0
        self.rule_names: set[tuple[str, ...]] = set()  # (*package, name) of every rule
        self.problems: list[str] = []
        self.report = False
        self.changed = False
        # per scope (one rule statement)
        self.mod: _Module = modules[0][0] if modules else _Module(Facts(), "?", [], set(), set())
        self.vars: dict[str, int] = {}
        self.missing: set[str] = set()  # names read before (or without) a binding
        self.local_changed = False
        for mod, rules in modules:
            for rule in rules:
                refr, _ = _head_ref(rule)
                root, segs = _ref_chain(refr)
                if not (isinstance(root, dict) and "Var" in root):
                    continue
                name = str(root["Var"].get("value", ""))
                self.rule_names.add((*mod.package, name))
                args = self._func_args(rule)
                if args is not None:
                    path = ("data", *mod.package, name, *[s for s in segs if isinstance(s, str)])
                    self.functions[path] = len(args)
                    self.func_params.setdefault(path, [0] * len(args))
                    self.func_ret.setdefault(path, 0)

    @staticmethod
    def _func_args(rule: Any) -> list[Any] | None:
        if "Default" in rule:
            args = rule["Default"].get("args") or []
            return list(args) if args else None
        head = rule.get("Spec", {}).get("head", {})
        if "Func" in head and isinstance(head["Func"], dict):
            return list(head["Func"].get("args") or [])
        return None

    def run(self) -> list[str]:
        for _ in range(100):
            self.changed = False
            self.round()
            if not self.changed:
                break
        else:  # not reached on real policies; sound either way
            self.input_type = _ANY
            for path in self.rule_types:
                self.rule_types[path] = _ANY
            for path in self.func_ret:
                self.func_ret[path] = _ANY
        self.report = True
        self.round()
        return self.problems

    def round(self) -> None:
        for mod, rules in self.modules:
            self.mod = mod
            for rule in rules:
                self.vars = {}
                for _ in range(200):
                    self.local_changed = False
                    self.missing = set()
                    self.rule(rule, final=False)
                    # a name read but bound nowhere in the rule: anything
                    for name in self.missing - self.vars.keys():
                        self.bind_var(name, _ANY)
                    if not self.local_changed:
                        break
                else:  # not reached on real policies; sound either way
                    self.vars = dict.fromkeys(self.vars, _ANY)
                self.rule(rule, final=True)

    # -- global state (joins only: the fixpoint is monotone)

    def join_rule(self, path: tuple[str, ...], t: int) -> None:
        old = self.rule_types.get(path, 0)
        if old | t != old:
            self.rule_types[path] = old | t
            self.changed = True

    def join_list(self, table: dict[tuple[str, ...], Any], path: tuple[str, ...], t: int) -> None:
        old = table.get(path, 0)
        if old | t != old:
            table[path] = old | t
            self.changed = True

    def bind_var(self, name: str, t: int) -> None:
        if name == "_" or not name:
            return
        old = self.vars.get(name)
        if old is None or old | t != old:
            self.vars[name] = (old or 0) | t
            self.local_changed = True

    def problem(self, node: Any, text: str) -> None:
        if self.report:
            message = f"{self.mod.site(node)}: {text}"
            if message not in self.problems:
                self.problems.append(message)

    # -- rules

    def rule(self, rule: Any, final: bool) -> None:
        report = self.report
        self.report = report and final
        try:
            self._rule(rule)
        finally:
            self.report = report

    def _rule(self, rule: Any) -> None:
        pkg = self.mod.package
        refr, spec = _head_ref(rule)
        root, segs = _ref_chain(refr)
        name = str(root["Var"].get("value", "")) if isinstance(root, dict) and "Var" in root else ""
        args = self._func_args(rule)
        if args is not None:
            path = ("data", *pkg, name, *[s for s in segs if isinstance(s, str)])
            params = self.func_params.get(path, [_ANY] * len(args))
            for i, arg in enumerate(args):
                self.bind(arg, params[i] if i < len(params) else _ANY)
                self.term(arg)
        value_t = 0
        if "Default" in rule:
            value_t = self.term(rule["Default"].get("value"))
        else:
            for body in spec.get("bodies") or []:
                if not isinstance(body, dict):
                    continue
                self.query(body.get("query"))
                extra = body.get("assign")
                if isinstance(extra, dict):
                    value_t |= self.term(extra.get("value"))
            head = spec.get("head", {})
            for kind, variant in head.items():
                if not isinstance(variant, dict):
                    continue
                assign = variant.get("assign")
                if isinstance(assign, dict):
                    value_t |= self.term(assign.get("value"))
                if kind == "Set" and variant.get("key") is None:
                    value_t = _ANY
                elif kind == "Set":
                    key_t = self.term(variant.get("key"))
                    if key_t:
                        self.problem(
                            spec,
                            "rule head: an element of a partial set that may hold a set "
                            f"(its iteration order differs: {_SET_BIAS})",
                        )
                    value_t = 1 | _wrap(key_t)
        if args is not None:
            path = ("data", *pkg, name, *[s for s in segs if isinstance(s, str)])
            self.join_list(self.func_ret, path, value_t)
            return
        # where the value lands: the static prefix of the head, then one level per
        # further segment (a dynamic one is an object key: it must not hold a set)
        static: list[str] = []
        depth = 0
        for seg in segs:
            if isinstance(seg, str) and depth == 0:
                static.append(seg)
                continue
            depth += 1
            if isinstance(seg, dict) and self.term(seg.get("index")):
                self.problem(
                    spec,
                    "rule head: an object key that may hold a set "
                    f"(its iteration order differs: {_SET_BIAS})",
                )
        for _ in range(depth):
            value_t = _wrap(value_t)
        if name:
            self.join_rule(("data", *pkg, name, *static), value_t)

    def query(self, query: Any) -> None:
        if not isinstance(query, dict):
            return
        for stmt in query.get("stmts") or []:
            if not isinstance(stmt, dict):
                continue
            literal = stmt.get("literal")
            if isinstance(literal, dict) and len(literal) == 1:
                kind, body = next(iter(literal.items()))
                if isinstance(body, dict):
                    self.literal(kind, body)
            for mod in stmt.get("with_mods") or []:
                if not isinstance(mod, dict):
                    continue
                as_t = self.term(mod.get("as"))
                target = static_ref(mod.get("refr"))
                if not as_t or target is None:
                    continue
                if target[0][0] == "input":
                    if self.input_type != _ANY:
                        self.input_type = _ANY
                        self.changed = True
                else:  # data (anything else is refused by `with_mod`)
                    path = tuple(target[0])
                    self.join_rule(path, as_t if target[1] else _ANY)
                    for fpath in self.functions:  # a function replaced by a value
                        n = min(len(fpath), len(path))
                        if fpath[:n] == path[:n]:
                            self.join_list(self.func_ret, fpath, _ANY)

    def literal(self, kind: str, body: dict[str, Any]) -> None:
        if kind == "SomeIn":
            coll = _elem(self.term(body.get("collection")))
            for part in (body.get("key"), body.get("value")):
                if part is not None:
                    self.bind(part, coll)
                    self.term(part)
        elif kind in ("Expr", "NotExpr"):
            self.term(body.get("expr"))
        elif kind == "Every":
            dom = _elem(self.term(body.get("domain")))
            for span in (body.get("key"), body.get("value")):
                if isinstance(span, dict) and isinstance(span.get("start"), int):
                    text = self.mod.source[span["start"] : span.get("end", 0)]
                    self.bind_var(text.decode("utf-8", "replace"), dom)
            self.query(body.get("query"))

    def bind(self, pattern: Any, t: int) -> None:
        """Join `t` into every variable `pattern` may bind (at its depth)."""
        if not isinstance(pattern, dict) or len(pattern) != 1:
            return
        kind, body = next(iter(pattern.items()))
        if not isinstance(body, dict):
            return
        if kind == "Var":
            self.bind_var(str(body.get("value", "")), t)
        elif kind in ("Array", "Set"):
            for item in body.get("items") or []:
                self.bind(item, _elem(t))
        elif kind == "Object":
            for field_ in body.get("fields") or []:
                for part in field_[1:] if isinstance(field_, list) else []:
                    self.bind(part, _elem(t))

    # -- terms

    def term(self, node: Any) -> int:
        """The mask of a term's value (and the checks on it, when reporting)."""
        if not isinstance(node, dict) or len(node) != 1:
            return _ANY
        kind, body = next(iter(node.items()))
        if not isinstance(body, dict):
            return _ANY
        if kind in ("String", "RawString", "Number", "Bool", "Null"):
            return 0
        if kind in ("Var", "RefDot", "RefBrack"):
            return self.ref(node)
        if kind in ("Array", "Set"):
            items = 0
            for item in body.get("items") or []:
                items |= self.term(item)
            if kind == "Array":
                return _wrap(items)
            if items:
                self.problem(
                    body,
                    "set: an element may hold a set (the set's iteration order differs: "
                    f"{_SET_BIAS})",
                )
            return 1 | _wrap(items)
        if kind == "Object":
            values = 0
            for field_ in body.get("fields") or []:
                if not isinstance(field_, list) or len(field_) != 3:
                    return _ANY
                if self.term(field_[1]):
                    self.problem(body, f"object: a key may hold a set ({_SET_BIAS})")
                values |= self.term(field_[2])
            return _wrap(values)
        if kind in _COMPREHENSIONS:
            self.query(body.get("query"))
            if kind == "ArrayCompr":
                return _wrap(self.term(body.get("term")))
            if kind == "SetCompr":
                item = self.term(body.get("term"))
                if item:
                    self.problem(
                        body,
                        "set comprehension: an element may hold a set (the set's "
                        f"iteration order differs: {_SET_BIAS})",
                    )
                return 1 | _wrap(item)
            if self.term(body.get("key")):
                self.problem(body, f"object comprehension: a key may hold a set ({_SET_BIAS})")
            return _wrap(self.term(body.get("value")))
        if kind == "Call":
            return self.call(body)
        if kind == "BoolExpr":
            lhs, rhs = body.get("lhs"), body.get("rhs")
            lt, rt = self.term(lhs), self.term(rhs)
            op = str(body.get("op"))
            if op in _ORDERING and (lt | rt) and not (self.scalar(lhs) or self.scalar(rhs)):
                self.problem(
                    body,
                    f"comparison {_ORDERING[op]}: an operand may hold a set and neither is "
                    f"a number, string, boolean or null by construction ({_SET_BIAS})",
                )
            return 0
        if kind == "AssignExpr":
            lhs, rhs = body.get("lhs"), body.get("rhs")
            rt = self.term(rhs)
            self.bind(lhs, rt)
            lt = self.term(lhs)
            if body.get("op") != "ColEq":
                self.bind(rhs, lt)
            return 0
        if kind == "Membership":
            coll = self.term(body.get("collection"))
            for part in (body.get("key"), body.get("value")):
                if part is not None:
                    self.bind(part, _elem(coll))
                    self.term(part)
            return 0
        if kind == "ArithExpr":
            lt, rt = self.term(body.get("lhs")), self.term(body.get("rhs"))
            return lt | rt if body.get("op") == "Sub" else 0  # set difference, or a number
        if kind == "BinExpr":  # | and &: a set of elements of sets (or an error)
            self.term(body.get("lhs"))
            self.term(body.get("rhs"))
            return 1
        if kind == "UnaryExpr":
            self.term(body.get("expr"))
            return 0
        if kind == "OrExpr":
            return self.term(body.get("lhs")) | self.term(body.get("rhs"))
        return _ANY

    def scalar(self, node: Any) -> bool:
        """A term whose value is a number, string, boolean or null whenever defined."""
        if not isinstance(node, dict) or len(node) != 1:
            return False
        kind, body = next(iter(node.items()))
        if kind in ("String", "RawString", "Number", "Bool", "Null", "UnaryExpr"):
            return True
        if kind in ("BoolExpr", "Membership", "AssignExpr"):
            return True
        if kind == "ArithExpr" and isinstance(body, dict):
            return body.get("op") != "Sub"
        if kind == "Call" and isinstance(body, dict):
            target = self.target(body.get("fcn"))
            return isinstance(target, str) and target in _SCALAR_BUILTINS
        return False

    def target(self, fcn: Any) -> tuple[str, ...] | str | None:
        """A user function's path, a builtin's name, or None (not a plain name)."""
        parsed = static_ref(fcn)
        if parsed is None or not parsed[1]:
            return None
        segs = parsed[0]
        first = segs[0]
        path: tuple[str, ...] | None
        if first == "data":
            path = tuple(segs)
        elif first in self.mod.local_names or (*self.mod.package, first) in self.rule_names:
            path = ("data", *self.mod.package, *segs)
        elif first in self.mod.alias_targets:
            path = (*self.mod.alias_targets[first], *segs[1:])
        else:
            path = None
        if path is not None and path in self.functions:
            return path
        return ".".join(segs)

    def call(self, body: dict[str, Any]) -> int:
        params = list(body.get("params") or [])
        target = self.target(body.get("fcn"))
        if isinstance(target, tuple):
            arity = self.functions[target]
            types = [self.term(p) for p in params[:arity]]
            for i, t in enumerate(types):
                old = self.func_params[target][i]
                if old | t != old:
                    self.func_params[target][i] = old | t
                    self.changed = True
            result = self.func_ret.get(target, _ANY)
        elif isinstance(target, str) and (target in _SCALAR_BUILTINS or target in _BUILTIN_TYPES):
            typer: Callable[[list[int]], int] | None = None
            if target in _BUILTIN_TYPES:
                arity, typer = _BUILTIN_TYPES[target]
            else:
                arity = _SCALAR_BUILTINS[target]
            types = [self.term(p) for p in params[:arity]]
            types += [_ANY] * (arity - len(types))
            result = typer(types) if typer is not None else 0
            self.builtin_checks(target, body, types)
        else:
            arity = len(params)
            for p in params:
                self.term(p)
            result = _ANY
        if len(params) > arity:  # the output argument
            self.bind(params[-1], result)
            self.term(params[-1])
        return result

    def builtin_checks(self, name: str, body: dict[str, Any], types: list[int]) -> None:
        if name in ("max", "min", "sort") and _elem(types[0]):
            self.problem(
                body,
                f"builtin {name}: an element of its argument may hold a set (it orders "
                f"them: {_SET_BIAS})",
            )
        elif name in ("graph.reachable", "graph.reachable_paths") and (
            _elem(_elem(types[0])) or _elem(types[1])
        ):
            self.problem(
                body,
                f"builtin {name}: a node may hold a set (it returns a set of nodes: {_SET_BIAS})",
            )
        elif name == "json.patch" and (types[0] | types[1]):
            self.problem(body, f"builtin json.patch: an argument may hold a set ({_SET_BIAS})")

    def ref(self, node: Any) -> int:
        root, segs = _ref_chain(node)
        for seg in segs:  # index terms: checked, and their variables bound below
            if isinstance(seg, dict):
                self.term(seg.get("index"))
        if isinstance(root, dict) and "Var" in root and isinstance(root["Var"], dict):
            name = str(root["Var"].get("value", ""))
            mod = self.mod
            if name == "input":
                t = self.input_type
                path: tuple[str, ...] | None = None
            elif name == "data":
                t, path = 0, ("data",)
            elif name in mod.alias_targets:
                alias = mod.alias_targets[name]
                t, path = (self.input_type, None) if alias[0] == "input" else (0, alias)
            elif name in self.vars:
                t, path = self.vars[name], None
                if name in mod.local_names or (*mod.package, name) in self.rule_names:
                    # a local of a rule's name: both, to be safe
                    rule_t = self.data_type(("data", *mod.package, name), segs)
                    return rule_t | self.walk_segments(t, segs)
            elif name in mod.local_names or (*mod.package, name) in self.rule_names:
                t, path = 0, ("data", *mod.package, name)
            elif name == "_":
                t, path = _ANY, None
            else:  # not bound (yet): 0 until the rule's fixpoint binds it (or gives up)
                self.missing.add(name)
                t, path = 0, None
            if path is not None:
                return self.data_type(path, segs)
        else:
            t = self.term(root)
        return self.walk_segments(t, segs)

    def walk_segments(self, t: int, segs: list[Any]) -> int:
        for seg in segs:
            if isinstance(seg, dict):
                self.bind(seg.get("index"), _elem(t))
            t = _elem(t)
        return t

    def data_type(self, path: tuple[str, ...], segs: list[Any]) -> int:
        """The mask of `<path><segs>` in the data document (rule values and `with`
        replacements; the JSON data holds no set)."""
        full = list(path)
        rest = list(segs)
        while rest and isinstance(rest[0], str):
            full.append(rest.pop(0))
        here = tuple(full)
        t = 0
        for rule_path, rt in self.rule_types.items():
            n = min(len(rule_path), len(here))
            if rule_path[:n] != here[:n]:
                continue
            if len(rule_path) >= len(here):
                for _ in range(len(rule_path) - len(here)):
                    rt = _wrap(rt)
            else:
                for _ in range(len(here) - len(rule_path)):
                    rt = _elem(rt)
            t |= rt
        return self.walk_segments(t, rest)
