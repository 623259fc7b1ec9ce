"""Review of issue 11: the order between an object and a set. OPA 0.61 orders
null < booleans < numbers < strings < arrays < objects < sets (ast/compare.go
sortOrder; the vectors README states it); regorus derives Ord on its Value enum,
whose variants read ... Array, Set, Object (src/value), so it orders a set BEFORE an
object. So `{"a": 1} < {1}` is true in OPA and false here, `max([{"a": 1}, {1}])` is
the set in OPA and the object here, `sort` of such a mix differs, and a set holding a
set and an object iterates in the other order (array comprehensions, indexing, the
JSON of a decision). A deny built on any of these does not fire.

Sets come only from the policy (literals, comprehensions, partial set rules, `|` /
`&` / `-`, object.keys, graph.reachable), never from input or data. checks.py
(`_SetOrder`) infers at which depths a term may hold a set, through variables, rules,
functions, `with` and builtins, and refuses: a set whose element, or an object whose
key, may hold a set; `<` `<=` `>` `>=` unless an operand is a scalar by construction or
neither may hold a set; max / min / sort of elements that may hold a set."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import regorus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ztproxy.policy.checks import analyze
from ztproxy.policy.loader import LoadError, load

POLICY = """package t
import rego.v1
default decision := false
deny if {
  m := input.meta
  m < {"blocked"}
}
decision if not deny
"""

BIAS = "orders a set before an object"


def _problems(body: str) -> list[str]:
    e = regorus.Engine()
    e.add_policy("t.rego", "package t\nimport rego.v1\n" + body)
    return [p for p in analyze(e.get_ast_as_json()).problems if BIAS in p]


def _value(body: str, rule: str, input_: object = None) -> object:
    e = regorus.Engine()
    e.add_policy("t.rego", "package t\nimport rego.v1\n" + body)
    if input_ is not None:
        e.set_input_json(json.dumps(input_))
    return json.loads(e.eval_rule_as_json(f"data.t.{rule}"))


# (rule body, rule, regorus's value, OPA's value by ast/compare.go)
DIFFERENCES = [
    ('lt := {"a": 1} < {1}', "lt", False, True),
    ('m := max([{"a": 1}, {1}])', "m", {"a": 1}, [1]),
    ('m := min([{"a": 1}, {1}])', "m", [1], {"a": 1}),
    ('s := sort([{"a": 1}, {1}])', "s", [[1], {"a": 1}], [{"a": 1}, [1]]),
    ('a := [x | some x in {{"a": 1}, {1}}]', "a", [[1], {"a": 1}], [{"a": 1}, [1]]),
    ('n := {{1}} < {{"a": 1}}', "n", True, False),
    ('n := [{1}] < [{"a": 1}]', "n", True, False),
    ('n := {"k": {1}} < {"k": {"a": 1}}', "n", True, False),
    ('k := [x | some x, _ in {{1}: 1, {"a": 1}: 2}]', "k", [[1], {"a": 1}], [{"a": 1}, [1]]),
]


@pytest.mark.parametrize(("body", "rule", "ours", "opa"), DIFFERENCES)
def test_regorus_orders_a_set_before_an_object(
    body: str, rule: str, ours: object, opa: object
) -> None:
    assert ours != opa
    assert _value(body, rule) == ours
    assert _problems(body), body  # and each one is refused


def test_review11_object_compared_with_a_set_is_refused(tmp_path: Path) -> None:
    e = regorus.Engine()
    e.add_policy("t.rego", POLICY)
    e.set_input_json(json.dumps({"meta": {"k": 1}}))
    assert json.loads(e.eval_rule_as_json("data.t.decision")) is True  # OPA: false
    del e
    (tmp_path / "t.rego").write_text(POLICY, encoding="utf-8")
    with pytest.raises(LoadError, match=r"t\.rego:6: comparison <: an operand may hold a set"):
        load([str(tmp_path)])


# (rule body, line of the refusal (the module starts with 2 header lines), construct)
REFUSED = [
    # comparisons: through variables, rules, data refs, imports, functions, with
    ("x := {1}\nd if input.o < x", 4, "comparison <"),
    ("d if { x := {1}; input.o >= x }", 3, "comparison >="),
    ("d if { [a, b] = [{1}, 2]; a <= input.o }", 3, "comparison <="),
    ("s := {1}\nd if input.o > s", 4, "comparison >"),
    ("s := {1}\nd if input.o > data.t.s", 4, "comparison >"),
    ("s contains 1\nd if data.t < input.o", 4, "comparison <"),
    ("a.b.c := {1}\nd if data.t.a < input.o", 4, "comparison <"),
    ("r[k] := {1} if some k in input.ks\nd if r < input.o", 4, "comparison <"),
    ("default s := {1}\nd if input.o < s", 4, "comparison <"),
    ("s := 1 if input.x else := {1}\nd if input.o < s", 4, "comparison <"),
    ("f(x) := x\nd if f({1}) < input.o", 4, "comparison <"),
    ("f(x) := {x}\nd if { f(1, y); y < input.o }", 4, "comparison <"),
    ("lt(a, b) if a < b\nd if lt(input.o, {1})", 3, "comparison <"),
    ("d if { input.o < input.s with input.s as {1} }", 3, "comparison <"),
    ("s := 1\nd if { input.o < data.t.s with data.t.s as {1} }", 4, "comparison <"),
    ("f(x) := 1\nd if { f(1) < input.o with data.t.f as {1} }", 4, "comparison <"),
    ("d if { some v in [{1}]; v < input.o }", 3, "comparison <"),
    ('d if { some _, v in {"a": {1}}; v < input.o }', 3, "comparison <"),
    ("d if { every v in [{1}] { v < input.o } }", 3, "comparison <"),
    ("d if [x | x := {1}][0] < input.o", 3, "comparison <"),
    ('d if {"k": {1}} < input.o', 3, "comparison <"),
    ("d if ({1, 2} - {1}) < input.o", 3, "comparison <"),
    ("d if ({1} | {2}) < input.o", 3, "comparison <"),
    ("d if object.keys(input.o) < input.p", 3, "comparison <"),
    ('d if object.get(input.o, "k", {1}) < input.p', 3, "comparison <"),
    ("d if { walk({1}, [_, v]); v < input.o }", 3, "comparison <"),
    ("import data.t.s as z\ns := {1}\nd if input.o < z", 5, "comparison <"),
    # ordering builtins over elements that may hold a set
    ("m := max([input.o, {1}])", 3, "builtin max"),
    ("m := min([input.o, {1}])", 3, "builtin min"),
    ("m := sort([input.o, {1}])", 3, "builtin sort"),
    ("m := sort([x | some x in [input.o, object.keys(input.o)]])", 3, "builtin sort"),
    ("f(x) := [x]\nm := max(f({1}))", 4, "builtin max"),
    ('m := max({"a": {1}, "b": input.o})', 3, "builtin max"),
    # sets whose elements (objects whose keys) may hold a set: their order differs
    ("s := {{1}, input.o}", 3, "set:"),
    ("s := {[{1}], input.o}", 3, "set:"),
    ("s := {x | some x in [{1}, input.o]}", 3, "set comprehension"),
    ("s contains x if some x in [{1}, input.o]", 3, "rule head: an element"),
    ("o := {{1}: 1}", 3, "object: a key"),
    ("o := {k: 1 | some k in [{1}]}", 3, "object comprehension"),
    ("o[k] := 1 if some k in [{1}]", 3, "rule head: an object key"),
    ('g := graph.reachable({"a": [{1}]}, ["a"])', 3, "builtin graph.reachable"),
    ('g := graph.reachable_paths({"a": []}, [{1}])', 3, "builtin graph.reachable_paths"),
    (
        'p := json.patch(input.o, [{"op": "add", "path": ["a"], "value": {1}}])',
        3,
        "builtin json.patch",
    ),
]


@pytest.mark.parametrize(("body", "line", "construct"), REFUSED)
def test_refused_where_a_set_may_meet_an_object(body: str, line: int, construct: str) -> None:
    problems = _problems(body)
    assert any(p.startswith(f"t.rego:{line}: {construct}") for p in problems), problems


LOADS = [
    # no operand may hold a set, or one is a scalar by construction
    "d if input.a < input.b",
    "d if count(input.xs) >= 3",
    'd if { s := {"a", "b"}; count(s) > 1 }',
    'd if { s := {"a", "b"}; input.o < count(s) }',
    'd if { s := object.keys(input.o); s == {"a"}; input.a < input.b }',
    'd if { some x in {"a", "b"}; x < input.s }',
    'd if { some x in {"a", "b"}; x <= "c" }',
    "d if input.n + 1 > input.m",
    'deny contains msg if { input.a > input.b; msg := "a" }\nd if count(deny) == 0',
    "m := sort(object.keys(input.o))",
    "m := max([count(input.a), count(input.b)])",
    "m := max(input.xs)",
    "m := sort({x | some x in input.xs})",
    "o := {k: {1} | some k in input.ks}\nd if count(o) > 0",
    "s := {x | some x in input.objects}\na := [x | some x in s]",
    'g := graph.reachable({"a": {"b"}, "b": set()}, {"a"})',
    "f(x) := x\nd if f(input.a) < input.b",
    "lt(a, b) if a < b\nd if lt(input.a, input.b)",
]


@pytest.mark.parametrize("body", LOADS)
def test_ordinary_policies_still_load(body: str) -> None:
    assert _problems(body) == []


def test_with_input_as_a_set_taints_every_input_read() -> None:
    # `with input.x as {1}` anywhere: every read of input may hold a set (to be safe)
    assert _problems("d if { true with input.x as {1} }\ne if input.a < input.b")
    assert not _problems("d if { true with input.x as 1 }\ne if input.a < input.b")


# -- property: whatever loads orders as OPA does --------------------------------------
# A model of OPA's Compare (ast/compare.go) on values built from Rego literals, and
# random policies that move two such values through rules, a function and variables
# into an ordering construct. Whenever the check lets the policy load, regorus's value
# must be OPA's; and a policy whose values hold no set must load.


class _Set:
    def __init__(self, items: list[object]) -> None:
        self.items: list[object] = []
        for item in items:
            if all(_cmp(item, seen) != 0 for seen in self.items):
                self.items.append(item)
        self.items.sort(key=functools.cmp_to_key(_cmp))


def _rank(v: object) -> int:
    if v is None:
        return 0
    if isinstance(v, bool):
        return 1
    if isinstance(v, int):
        return 2
    if isinstance(v, str):
        return 3
    if isinstance(v, list):
        return 4
    if isinstance(v, dict):
        return 5
    return 6  # _Set: after objects (OPA's sortOrder)


def _seq(a: list[object], b: list[object]) -> int:
    for x, y in zip(a, b, strict=False):
        c = _cmp(x, y)
        if c:
            return c
    return (len(a) > len(b)) - (len(a) < len(b))


def _cmp(a: object, b: object) -> int:
    ra, rb = _rank(a), _rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    if a is None:
        return 0
    if isinstance(a, list) and isinstance(b, list):
        return _seq(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        ka, kb = sorted(a), sorted(b)
        for x, y in zip(ka, kb, strict=False):
            c = _cmp(x, y) or _cmp(a[x], b[y])
            if c:
                return c
        return (len(ka) > len(kb)) - (len(ka) < len(kb))
    if isinstance(a, _Set) and isinstance(b, _Set):
        return _seq(a.items, b.items)
    if isinstance(a, str) and isinstance(b, str):  # OPA: Go strings, by bytes
        ea, eb = a.encode(), b.encode()
        return (ea > eb) - (ea < eb)
    return (a > b) - (a < b)  # type: ignore[operator]


def _json(v: object) -> object:
    if isinstance(v, _Set):
        return [_json(x) for x in v.items]
    if isinstance(v, list):
        return [_json(x) for x in v]
    if isinstance(v, dict):
        return {k: _json(x) for k, x in v.items()}
    return v


def _rego(v: object) -> str:
    if isinstance(v, _Set):
        return "{" + ", ".join(_rego(x) for x in v.items) + "}" if v.items else "set()"
    if isinstance(v, list):
        return "[" + ", ".join(_rego(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_rego(x)}" for k, x in v.items()) + "}"
    return json.dumps(v)


def _has_set(v: object) -> bool:
    if isinstance(v, _Set):
        return True
    if isinstance(v, list):
        return any(_has_set(x) for x in v)
    if isinstance(v, dict):
        return any(_has_set(x) for x in v.values())
    return False


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["", "a", "b", "é"])
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
        st.lists(inner, max_size=3).map(_Set),
    ),
    max_leaves=6,
)

# construct: (rego for rule r over a and b, the model's answer)
_CONSTRUCTS: dict[str, tuple[str, Callable[[object, object], object]]] = {
    "lt": ("r := f(va) < vb", lambda a, b: _cmp(a, b) < 0),
    "ge": ("r := o if { x := va; y := [vb][0]; o := x >= y }", lambda a, b: _cmp(a, b) >= 0),
    "max": ("r := max([va, f(vb)])", lambda a, b: a if _cmp(a, b) >= 0 else b),
    "min": ("r := min([f(va), vb])", lambda a, b: a if _cmp(a, b) <= 0 else b),
    "sort": ("r := sort([va, vb])", lambda a, b: sorted([a, b], key=functools.cmp_to_key(_cmp))),
    "iterate": ("s := {va, vb}\nr := [x | some x in s]", lambda a, b: _Set([a, b]).items),
    "index": (
        "s contains va\ns contains vb\nr := [x | some x in s][0]",
        lambda a, b: _Set([a, b]).items[0],
    ),
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=_values, b=_values, construct=st.sampled_from(sorted(_CONSTRUCTS)))
def test_what_loads_orders_as_opa(a: object, b: object, construct: str) -> None:
    rule, model = _CONSTRUCTS[construct]
    body = f"va := {_rego(a)}\nvb := {_rego(b)}\nf(x) := x\n{rule}\n"
    problems = _problems(body)
    if not (_has_set(a) or _has_set(b)):
        assert problems == [], body  # precision: no set, nothing refused
    if problems:
        return
    ours = _value(body, "r")
    want = _json(model(a, b))
    assert json.dumps(ours, sort_keys=True) == json.dumps(want, sort_keys=True), body
