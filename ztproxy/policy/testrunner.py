"""`ztproxy policy test`: runs Rego unit tests in-process with regorus (no OPA binary).

Takes directories or files; loads every `.rego` (tests included) and the data files
exactly as the server would (`loader`), finds rules named `test_*` in every package,
evaluates each and prints one line per test like `opa test -v`, then a summary. A
test passes when its rule is true; false or undefined is FAIL, an evaluation error is
ERROR; `todo_test_*` rules are SKIPPED. Returns a `TestReport`; the CLI exits 1 when
anything failed or the files did not load. Blocking: call from a thread or the CLI.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from .loader import LoadError, load, short_error


@dataclass(frozen=True, slots=True)
class TestOutcome:
    file: str
    name: str  # data.<package>.<rule>
    status: str  # PASS | FAIL | ERROR | SKIPPED
    seconds: float
    message: str = ""


@dataclass(frozen=True, slots=True)
class TestReport:
    outcomes: tuple[TestOutcome, ...]
    load_error: str = ""

    @property
    def ok(self) -> bool:
        return not self.load_error and bool(self.outcomes) and all(
            o.status in ("PASS", "SKIPPED") for o in self.outcomes)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


def _ref_path(ref: Any) -> list[str]:
    """The dotted path of a regorus AST reference (`Var` or a `RefDot` chain)."""
    if not isinstance(ref, dict):
        return []
    if "Var" in ref:
        return [str(ref["Var"].get("value", ""))]
    if "RefDot" in ref:
        node = ref["RefDot"]
        field = node.get("field")
        name = field[1] if isinstance(field, list) and len(field) == 2 else ""
        return _ref_path(node.get("refr")) + [str(name)]
    return []


def _rule_name(rule: Any) -> str:
    head = rule.get("Spec", {}).get("head", {}) if isinstance(rule, dict) else {}
    for variant in head.values():
        if isinstance(variant, dict):
            path = _ref_path(variant.get("refr"))
            if path:
                return path[0]
    return ""


def discover(ast_json: str) -> Iterator[tuple[str, str, str]]:
    """(file, package, rule) for each distinct test or todo-test rule, in file order."""
    seen: set[tuple[str, str]] = set()
    for module in json.loads(ast_json):
        file = module.get("source", {}).get("file", "")
        ast = module.get("ast", {})
        package = ".".join(_ref_path(ast.get("package", {}).get("refr")))
        for rule in ast.get("rules", []):
            name = _rule_name(rule)
            if (name.startswith("test_") or name.startswith("todo_test_")) and \
                    (package, name) not in seen:
                seen.add((package, name))
                yield file, package, name


def run_tests(paths: Sequence[str], data_paths: Sequence[str] = ()) -> TestReport:
    try:
        loaded = load(paths, data_paths, include_tests=True)
    except LoadError as exc:
        return TestReport((), load_error=str(exc))
    engine = loaded.engine
    outcomes = []
    for file, package, name in discover(engine.get_ast_as_json()):
        full = f"data.{package}.{name}"
        if name.startswith("todo_"):
            outcomes.append(TestOutcome(file, full, "SKIPPED", 0.0))
            continue
        started = time.perf_counter()
        try:
            value = engine.eval_rule(full)
        except RuntimeError as exc:
            outcomes.append(TestOutcome(file, full, "ERROR", time.perf_counter() - started,
                                        short_error(exc)))
            continue
        status = "PASS" if value is True else "FAIL"
        outcomes.append(TestOutcome(file, full, status, time.perf_counter() - started))
    return TestReport(tuple(outcomes))


def print_report(report: TestReport, out: TextIO) -> None:
    if report.load_error:
        print(f"error: {report.load_error}", file=out)
        return
    if not report.outcomes:
        print("no tests found (rules named test_*)", file=out)
        return
    current = None
    for o in report.outcomes:
        if o.file != current:
            if current is not None:
                print(file=out)
            print(f"{o.file}:", file=out)
            current = o.file
        timing = "" if o.status == "SKIPPED" else f" ({o.seconds * 1000:.3f}ms)"
        line = f"{o.name}: {o.status}{timing}"
        print(line + (f"\n  {o.message}" if o.message else ""), file=out)
    print("-" * 80, file=out)
    total = len(report.outcomes)
    for status in ("PASS", "FAIL", "ERROR", "SKIPPED"):
        n = report.count(status)
        if n:
            print(f"{status}: {n}/{total}", file=out)
