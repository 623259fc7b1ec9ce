"""OPA 0.61.0's own answers (shared/opa-vectors) against the embedded engine.

Every case is run the way the proxy loads and evaluates a policy: the policy directory
goes through `loader.load` (all load-time checks: builtin allowlist, rule/data
conflicts, the decision rule exists) with the case's query as a decision path; the
input goes in as JSON text exactly as written (decimals kept), and the answer is
classified as a value, undefined or an error (`embedded.evaluate_loaded`, what serves
requests). A case without `input` is evaluated on an engine that never had one.

Outcome per case:
- agree    same class as OPA, and for a value an equal value (numbers by exact decimal
           value, sets as arrays in order);
- refused  the proxy refuses to load the policy (for `load_*` policies that is OPA's
           answer too);
- safer    ours is an evaluation error where OPA gives a value or undefined: the proxy
           answers 503, never an allow. Allowed only for the classes in KNOWN_SAFER
           (also in docs/rego-authors.md, "Differences from OPA");
- FAIL     anything else: a value or undefined where OPA says otherwise. Never allowed.

The vectors live beside the clone (`<repo>/../shared/opa-vectors`); the test is skipped
when they are absent. `python tests/policy/test_opa_vectors.py` prints the table.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ztproxy.policy.embedded import evaluate_loaded, inexact_number
from ztproxy.policy.loader import LoadError, load

REPO = Path(__file__).resolve().parents[2]
VECTORS = Path(os.environ.get("ZTPROXY_OPA_VECTORS", REPO.parent / "shared" / "opa-vectors"))

# Known SAFER differences (ours fails closed where OPA answers), by class: the start of
# the outcome's detail -> reason. Also in docs/rego-authors.md, "Differences from OPA".
KNOWN_SAFER: dict[str, str] = {
    "ours error": "regorus raises where OPA's default mode makes the expression undefined "
    "(a failing builtin, a type error: OPA's --strict-builtin-errors "
    "behaviour); the decision is an evaluation error, so 503, never an allow",
    "input integer": "an input integer from 2^53 on: regorus would round it, so the proxy "
    "refuses the input (503) instead of deciding on a rounded value",
    "input number": "an input non-integer number (1.0, 0.1, 3.5): regorus computes it in "
    "float64 where OPA is exact, so the proxy refuses the input "
    "(503, policy_input_unsupported_number)",
}

# Known OPEN differences (ours gives a value where OPA gives another): none. The 11
# cases once listed here (float64 arithmetic, products past 2^53, a set holding 1 and
# 1.0 as one element, an array index 1.0) are closed for their whole class: non-integer
# numbers are refused in modules (checks.py, literals), data (loader) and input (503);
# `/`, `*` and `sum` are refused, and `+` / `-` only load where the operands bound the
# result inside regorus's exact integer range (checks.py, `_Module.arith`). Kept as a
# dict so that a new open difference must be listed, with its reason, to pass.
KNOWN_OPEN: dict[str, str] = {}


@dataclass(frozen=True, slots=True)
class Case:
    policy: str
    id: str
    query: str | None
    has_input: bool
    input: Any
    expect: dict[str, Any]
    flags: tuple[str, ...]
    note: str


def _dec(text: str) -> Decimal:
    return Decimal(text)


def cases(policy_dir: Path) -> Iterator[Case]:
    for line in (policy_dir / "cases.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        raw = json.loads(line, parse_float=_dec, parse_int=_dec)
        yield Case(
            policy_dir.name,
            raw["id"],
            raw.get("query"),
            "input" in raw,
            raw.get("input"),
            raw["expect"],
            tuple(raw.get("flags", ())),
            raw.get("note", ""),
        )


def to_json(value: Any) -> str:
    """JSON text keeping numbers exactly as read (Decimal)."""
    if isinstance(value, Decimal):
        return str(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(
                json.dumps(k, ensure_ascii=False) + ":" + to_json(v) for k, v in value.items()
            )
            + "}"
        )
    raise TypeError(type(value).__name__)


def _number_kind(value: Any) -> str:
    """ "int" when the input holds an integer the proxy refuses (>= 2^53, as
    `embedded.inexact_number`), "decimal" for any non-integer number as written (`1.0`
    and `1e3` too: JSON gives Python a float, `embedded.holds_float`), else ""."""
    if isinstance(value, Decimal):
        text = str(value)
        if (
            value.is_finite()
            and value == value.to_integral_value()
            and not any(c in text for c in ".eE")
        ):
            return "int" if inexact_number(int(value)) else ""
        return "decimal"
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        kinds = {_number_kind(v) for v in value}
        return "int" if "int" in kinds else "decimal" if "decimal" in kinds else ""
    return ""


def same(ours: Any, theirs: Any) -> bool:
    if isinstance(theirs, Decimal) or isinstance(ours, Decimal):
        return isinstance(ours, Decimal) and isinstance(theirs, Decimal) and ours == theirs
    if isinstance(theirs, list):
        return (
            isinstance(ours, list)
            and len(ours) == len(theirs)
            and all(same(a, b) for a, b in zip(ours, theirs, strict=True))
        )
    if isinstance(theirs, dict):
        return (
            isinstance(ours, dict)
            and ours.keys() == theirs.keys()
            and all(same(ours[k], theirs[k]) for k in theirs)
        )
    return type(ours) is type(theirs) and ours == theirs


_loaded_cache: dict[tuple[str, tuple[str, ...]], Any] = {}


def _load(policy_dir: Path, paths: tuple[str, ...]) -> Any:
    key = (str(policy_dir), paths)
    if key not in _loaded_cache:
        try:
            loaded = load([str(policy_dir)], decision_paths=paths)
            _loaded_cache[key] = (loaded, loaded.engine.clone())
        except LoadError as exc:
            _loaded_cache[key] = exc
    return _loaded_cache[key]


def run_case(case: Case) -> tuple[str, str]:
    """(outcome, detail): outcome in agree | refused | safer | FAIL."""
    policy_dir = VECTORS / case.policy
    expect = case.expect
    if case.query is None:  # OPA refused to load
        paths = ()
    else:
        paths = (case.query.removeprefix("data.").replace(".", "/"),)
    loaded = _load(policy_dir, paths)
    if isinstance(loaded, LoadError):
        return "refused", str(loaded)
    if case.query is None:
        return "FAIL", f"OPA refused to load ({expect.get('error')}); we loaded it"
    engine_ready, pristine = loaded
    if case.has_input:
        kind = _number_kind(case.input)
        if kind == "int":  # the proxy refuses it (embedded.inexact_number): 503
            return ("agree" if "error" in expect else "safer"), "input integer >= 2^53"
        if kind == "decimal":  # the proxy refuses it (embedded.holds_float): 503
            return ("agree" if "error" in expect else "safer"), "input number, not an integer"
    engine = engine_ready.engine if case.has_input else pristine.clone()
    if case.has_input:  # the exact text: numbers as OPA read them
        try:
            engine.set_input_json(to_json(case.input))
        except RuntimeError as exc:
            return ("agree" if "error" in expect else "safer"), f"input refused: {exc}"[:120]
    out = evaluate_loaded(engine, case.query, None)
    if isinstance(out, str):
        if "error" in expect:
            return "agree", ""
        return "safer", f"ours error ({out[:120]}), OPA {json.dumps(expect, default=str)[:120]}"
    if not out.defined:
        if expect.get("undefined"):
            return "agree", ""
        return "FAIL", f"ours undefined, OPA {json.dumps(expect, default=str)[:160]}"
    ours = (
        json.loads(out.text, parse_float=_dec, parse_int=_dec)
        if out.text
        else json.loads(json.dumps(out.value), parse_float=_dec, parse_int=_dec)
    )
    if "value" in expect and same(ours, expect["value"]):
        return "agree", ""
    return "FAIL", (f"ours {to_json(ours)[:120]}, OPA {json.dumps(expect, default=str)[:160]}")


def all_policies() -> list[str]:
    if not VECTORS.is_dir():
        return []
    return sorted(p.name for p in VECTORS.iterdir() if (p / "cases.jsonl").is_file())


def outcomes(policy: str) -> list[tuple[Case, str, str]]:
    return [(c, *run_case(c)) for c in cases(VECTORS / policy)]


@pytest.mark.skipif(not VECTORS.is_dir(), reason=f"no OPA vectors at {VECTORS}")
@pytest.mark.parametrize("policy", all_policies())
def test_opa_vectors(policy: str) -> None:
    results = outcomes(policy)
    fails = [(c.id, d) for c, o, d in results if o == "FAIL" and c.id not in KNOWN_OPEN]
    assert not fails, f"{len(fails)} case(s) disagree with OPA: {fails[:5]}"
    unlisted = [
        (c.id, d) for c, o, d in results if o == "safer" and not d.startswith(tuple(KNOWN_SAFER))
    ]
    assert not unlisted, f"safer differences of no known class: {unlisted[:3]}"
    stale = [c.id for c, o, _ in results if c.id in KNOWN_OPEN and o != "FAIL"]
    assert not stale, f"KNOWN_OPEN cases that no longer differ: {stale}"


def report() -> None:
    total: Counter[str] = Counter()
    for policy in all_policies():
        res = outcomes(policy)
        count = Counter(o for _, o, _ in res)
        total.update(count)
        print(
            f"{policy:28} {count['agree']:4}/{len(res):<4} refused={count['refused']:<4}"
            f" safer={count['safer']:<4} n/a={count['n/a']:<3} FAIL={count['FAIL']}"
        )
        if "-v" in sys.argv:
            for c, o, detail in res:
                if o in ("FAIL", "safer") and (o == "FAIL" or "-vv" in sys.argv):
                    print(f"    {o} {c.id}: {detail}  [{c.note[:80]}]")
            by_note = Counter(re.sub(r" \| input.*", "", c.note) for c, o, _ in res if o == "FAIL")
            for note, n in by_note.most_common(8):
                print(f"      {n:3} x {note[:100]}")
    print("TOTAL", dict(total))


if __name__ == "__main__":
    report()
