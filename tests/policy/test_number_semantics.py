"""Issue 11 (second pass): numbers the embedded engine would compute differently from
OPA 0.61 are refused, for the whole class, not case by case.

The 11 vector cases once listed as KNOWN_OPEN in test_opa_vectors.py gave a different
VALUE (not an error) with nothing refused: `0.1 * 3 <= 0.3` false, `0.1 + 0.2` =
0.30000000000000004, `2^32 * 2^32` rounded to a float, a set holding 1 and 1.0 as one
element, `a[1.0]` selecting an element. regorus holds a non-integer as a float64 (OPA:
an exact decimal) and an integer as i64/u64, turning an overflowing result into a
float64 (OPA stays exact). The argument that no such difference is left:

1. no non-integer enters evaluation: number literals must be plain integers
   (checks.py `_Module.number`, read from the module text, since the AST gives 1.0 as
   1), data files refuse any non-integer (loader, JSON and YAML, with the line), an
   input holding one is refused with 503 `policy_input_unsupported_number`
   (embedded.unsupported_number, proven cheaply by the input stage's `no_floats`);
2. no operation makes a non-integer: `/` is refused; the allowlisted builtins make
   numbers only by counting or selecting (count, max, min, abs, round/ceil/floor of
   integers, semver.compare, indexes);
3. every integer entering evaluation is below 2^53 in magnitude (literals, data, input:
   the same bound), and no integer leaves regorus's exact range (2^63): `*` and `sum`
   are refused, `%` never grows a magnitude, and `+` / `-` load only where the
   operands alone bound the result (integer literals, count(...), `%` with such a side,
   nested `+`/`-` of those; `_bound`) or an operand is a set term (then it is set
   difference or an error in both engines, never a number).

Each test below replays one construct the old head loaded and computed differently;
the hypothesis test checks point 3 against Python's exact integers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from policy_support import device, facts, outcome, peer, started_decider, user

from ztproxy.config.policy import PolicyConfig
from ztproxy.model import Credentials
from ztproxy.policy import build_decider
from ztproxy.policy.decider import PolicyDecider
from ztproxy.policy.embedded import evaluate_loaded, unsupported_number
from ztproxy.policy.loader import LoadError, load
from ztproxy.policy.prepared import PreparedInput
from ztproxy.stages.policy_input import build_policy_input

HEAD = "package t\nimport rego.v1\n"


def _load(tmp_path: Path, body: str, files: dict[str, str] | None = None) -> Any:
    (tmp_path / "t.rego").write_text(HEAD + body, encoding="utf-8")
    for name, text in (files or {}).items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return load([str(tmp_path)])


def _refused(tmp_path: Path, body: str, files: dict[str, str] | None = None) -> str:
    with pytest.raises(LoadError) as info:
        _load(tmp_path, body, files)
    return str(info.value)


# The KNOWN_OPEN constructs, refused at load ---------------------------------------------


@pytest.mark.parametrize(
    ("body", "line", "construct"),
    [
        ("point_three if 0.1 * 3 <= 0.3\n", 3, "operator *"),  # numbers/point_three
        ("sum_point_three := 0.1 + 0.2\n", 3, "number 0.1"),  # numbers/sum_point_three
        ("x := 1.0\n", 3, "number 1.0"),  # 1.0 is not 1 to OPA
        ("x := 1e3\n", 3, "number 1e3"),
        ("x := -0.5\n", 3, "number -0.5"),
        ("x := 9007199254740993\n", 3, "number 9007199254740993"),  # >= 2^53
        ("big_product := 4294967296 * 4294967296\n", 3, "operator *"),  # numbers/big_product
        ("times_three := input.n * 3\n", 3, "operator *"),  # numbers/times_three
        ("third := 1 / 3\n", 3, "operator /"),
        ("half := input.n / 2\n", 3, "operator /"),
        ("sum_ab(a, b) := a + b\n", 3, "operator +"),  # functions/sum_ab
        ("plus_one := input.n + 1\n", 3, "operator +"),
        ("x := 1\ny := x + x\n", 4, "operator +"),  # a chain via a rule
        ("total := sum(input.xs)\n", 3, "builtin sum"),
        ("a := {1}\nx := y if {\n a := 5\n y := a - 1\n}\n", 6, "operator -"),  # shadowed set
    ],
)
def test_number_construct_refused_at_load(
    tmp_path: Path, body: str, line: int, construct: str
) -> None:
    message = _refused(tmp_path, body)
    assert f"t.rego:{line}: {construct}" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "body",
    [
        "x := 3\ny := -7\nz := 0\n",
        "n := count(input.xs) + 1\n",
        "n := count(input.xs) - count(input.ys) + 2\n",
        "r := input.n % 3\n",
        "r := (input.n % 10) + 5\n",
        # sets/difference
        "a := {x | some x in input.a}\nb := {x | some x in input.b}\nd := a - b\n",
        "b contains x if some x in input.b\nd := {x | some x in input.a} - b\n",
        "ok if input.n >= 9007199254740991\n",
        "m := max([1, 2, input.n])\n",
    ],
)
def test_integer_and_set_constructs_still_load(tmp_path: Path, body: str) -> None:
    _load(tmp_path, body)


def test_shipped_policies_still_load() -> None:
    root = Path(__file__).resolve().parents[2] / "policies"
    load([str(root)], decision_paths=("ztproxy/authz/decision",))


# Data: any non-integer refused, with the line --------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        (
            "d/data.json",
            '{"a": {"s": "x 1.5",\n "xs": [1,\n 1.0]}}',
            "d/data.json:3: JSON: number 1.0",
        ),
        ("d/data.json", '{"limit": 0.3}', "d/data.json:1: JSON: number 0.3"),
        ("d/data.json", '{"k": 1e3}', "d/data.json:1: JSON: number 1e3"),
        ("d/data.yaml", "a:\n  b: 1.5\n", "d/data.yaml:2: YAML: number 1.5"),
        ("d/data.yaml", "a: 1e3\n", "d/data.yaml:1: YAML: number 1e3"),
        ("d/data.yaml", "a: 99999999999999999999\n", "d/data.yaml:1: YAML: number 9999"),
    ],
)
def test_non_integer_data_refused_with_line(
    tmp_path: Path, name: str, text: str, where: str
) -> None:
    assert where in _refused(tmp_path, "x := 1\n", {name: text})


# Input: a float anywhere is a 503, never a value OPA would not compute ------------------

SETS = """a := {x | some x in input.a}
b := {x | some x in input.b}
decision if count(a & b) > 0
default decision := false
idx := ["x", "y"][input.i]
"""


async def _decider(policy_dir: Path) -> PolicyDecider:
    return await started_decider(policy_dir)  # type: ignore[no-any-return]


async def _outcome(d: PolicyDecider, doc: Any) -> str:
    return await outcome(d, doc)


async def test_input_float_is_refused_not_merged_with_an_integer(tmp_path: Path) -> None:
    """sets/intersection/005: {1} & {1.0} is {1} in regorus (allowed here), {} in OPA."""
    (tmp_path / "t.rego").write_text(HEAD + SETS, encoding="utf-8")
    d = await _decider(tmp_path)
    try:
        for doc in (
            {"a": [1], "b": [1.0]},
            PreparedInput({"a": [1], "b": [1.0]}),
            {"a": [1], "b": [[{"x": 3.5}]]},
        ):
            assert await _outcome(d, doc) == "503:policy_input_unsupported_number"
        assert await _outcome(d, {"a": [1], "b": [1]}) == "allow"
        assert (
            await _outcome(d, PreparedInput({"a": [1], "b": [2]}, no_floats=True))
            == "deny:policy_deny"
        )
    finally:
        await d.close()  # type: ignore[attr-defined]


def test_input_float_index_is_refused(tmp_path: Path) -> None:
    """arrays/at/018: `a[1.0]` is "y" in regorus, undefined in OPA."""
    loaded = _load(tmp_path, SETS)
    assert isinstance(evaluate_loaded(loaded.engine, "data.t.idx", {"i": 1.0}), str)
    out = evaluate_loaded(loaded.engine, "data.t.idx", {"i": 1})
    assert not isinstance(out, str) and out.value == "y"


def test_token_claim_float_is_seen_by_the_input_flag() -> None:
    """The input stage's `no_floats` is what lets a normal request skip the walk: a float
    in a user or device claim clears it, and the input is refused."""
    plain = build_policy_input(facts(), peer(), Credentials(user=user(), device=device()))
    assert plain.no_floats and unsupported_number(plain) is None
    for creds in (
        Credentials(user=user(), device=device(trust_level=3.0)),  # type: ignore[arg-type]
        Credentials(user=user(), device=device(trust_level=2.5)),
    ):  # type: ignore[arg-type]
        doc = build_policy_input(facts(), peer(), creds)
        assert not doc.no_floats
        assert "non-integer" in (unsupported_number(doc) or "")


# Point 3: accepted integer arithmetic is exact ------------------------------------------

LEAF = st.one_of(
    st.integers(-(2**53) + 1, 2**53 - 1).map(lambda n: (str(n), n)),
    st.integers(0, 5).map(lambda n: (f"count({list(range(n))})", n)),
)


def _mod(a: int, b: int) -> int:  # truncated remainder, as OPA (Go) and regorus (Rust)
    r = abs(a) % abs(b)
    return -r if a < 0 else r


def _tree(children: Any) -> Any:
    def combine(parts: Any) -> tuple[str, int | None]:
        (lt, lv), op, (rt, rv) = parts
        if lv is None or rv is None:
            return f"({lt} {op} {rt})", None
        if op == "%":
            return f"({lt} % {rt})", None if rv == 0 else _mod(lv, rv)
        return f"({lt} {op} {rt})", lv + rv if op == "+" else lv - rv

    return st.tuples(children, st.sampled_from("+-%"), children).map(combine)


EXPR = st.recursive(LEAF, _tree, max_leaves=12)


@settings(max_examples=60, deadline=None)
@given(EXPR)
def test_accepted_integer_arithmetic_is_exact(tmp_path_factory: Any, expr: Any) -> None:
    text, exact = expr
    root = tmp_path_factory.mktemp("arith")
    try:
        loaded = _load(root, f"x := {text}\n")
    except LoadError as exc:  # modulo by a constant zero: the load probe's error
        assert exact is None and "modulo by zero" in str(exc)
        return
    out = evaluate_loaded(loaded.engine, "data.t.x", None)
    if exact is None:  # a modulo by zero: an error (OPA: error too)
        assert isinstance(out, str)
        return
    assert not isinstance(out, str) and out.defined
    assert type(out.value) is int and out.value == exact, (text, out.value, exact)


async def test_refused_number_on_reload_keeps_policy_and_counts(tmp_path: Path) -> None:
    """A reload bringing a refused number changes nothing and is counted in
    `ztproxy_policy_reload_failures_total` (issue 11, "Bad input")."""
    from ztproxy.metrics import Metrics

    (tmp_path / "t.rego").write_text(
        HEAD + "default decision := false\ndecision if input.n > 2\n", encoding="utf-8"
    )
    metrics = Metrics()
    cfg = PolicyConfig(
        policy_dirs=(str(tmp_path),), decision_path="t/decision", cache_ttl_ms=0, watch=False
    )
    d = build_decider(cfg, metrics=metrics)
    await d.start()  # type: ignore[attr-defined]
    assert isinstance(d, PolicyDecider)
    try:
        good = d.revision
        (tmp_path / "t.rego").write_text(
            HEAD + "default decision := false\ndecision if input.n > 2.5\n", encoding="utf-8"
        )
        assert await d.reload() is False
        assert d.revision == good
        assert await _outcome(d, {"n": 3}) == "allow"
        value = metrics.registry.get_sample_value("ztproxy_policy_reload_failures_total")
        assert value == 1.0
    finally:
        await d.close()  # type: ignore[attr-defined]
