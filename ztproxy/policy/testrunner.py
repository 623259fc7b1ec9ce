"""`ztproxy policy test`: runs Rego unit tests in-process (no OPA binary), with the
evaluator that serves requests.

Takes directories or files; loads every `.rego` (tests included) and the data files
through the same loader and load-time checks as the server (`loader`, `checks`), finds
rules named `test_*` in every package, evaluates each with `embedded.evaluate_loaded`
(what answers requests) and prints one line per test like `opa test -v`, then a summary.
A test passes when its rule is true; false or undefined is FAIL, an evaluation error is
ERROR; `todo_test_*` rules are SKIPPED. Several rules with one name (`test_x if {...}`
twice) are one rule in Rego, true when ANY body is: like `opa test`, each body is run
on its own (`test_x#01`, `test_x#02`), so a failing body is never hidden by a passing
one. `run` filters by a regular expression on the full name; `coverage` gives the
per-file percentage of lines evaluated (regorus's coverage report). Returns a
`TestReport`; the CLI exits 1 when anything failed or the files did not load.
Blocking: call from a thread or the CLI.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from .embedded import evaluate_loaded
from .loader import LoadError, Source, compile_sources, read_sources


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
    # (file, percent, covered lines, not covered lines), when asked for
    coverage: tuple[tuple[str, float, int, int], ...] = ()

    @property
    def ok(self) -> bool:
        return (
            not self.load_error
            and bool(self.outcomes)
            and all(o.status in ("PASS", "SKIPPED") for o in self.outcomes)
        )

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
            if (name.startswith("test_") or name.startswith("todo_test_")) and (
                package,
                name,
            ) not in seen:
                seen.add((package, name))
                yield file, package, name


@dataclass(frozen=True, slots=True)
class _Test:
    file: str
    package: str
    name: str  # the rule name in the source
    label: str  # the name reported (name, or name#NN for one of several bodies)
    start: int  # span of the head's name in the source (to rename a duplicate)
    end: int


def _tests(ast_json: str) -> list[_Test]:
    out: list[_Test] = []
    for module in json.loads(ast_json):
        file = module.get("source", {}).get("file", "")
        ast = module.get("ast", {})
        package = ".".join(_ref_path(ast.get("package", {}).get("refr")))
        for rule in ast.get("rules", []):
            name = _rule_name(rule)
            if not (name.startswith("test_") or name.startswith("todo_test_")):
                continue
            span = _head_span(rule)
            out.append(_Test(file, package, name, name, span[0], span[1]))
    counts = Counter((t.package, t.name) for t in out)
    seen: Counter[tuple[str, str]] = Counter()
    labelled = []
    for t in out:
        key = (t.package, t.name)
        if counts[key] > 1:
            seen[key] += 1
            t = _Test(t.file, t.package, t.name, f"{t.name}#{seen[key]:02d}", t.start, t.end)
        labelled.append(t)
    return labelled


def _head_span(rule: Any) -> tuple[int, int]:
    head = rule.get("Spec", {}).get("head", {}) if isinstance(rule, dict) else {}
    for variant in head.values():
        if isinstance(variant, dict):
            refr = variant.get("refr", {})
            node = refr.get("Var") if isinstance(refr, dict) else None
            span = node.get("span") if isinstance(node, dict) else None
            if isinstance(span, dict):
                return int(span.get("start", -1)), int(span.get("end", -1))
    return -1, -1


def _split_duplicates(sources: Sequence[Source], tests: list[_Test]) -> tuple[Source, ...]:
    """The sources with every body of a duplicated test renamed to its own rule
    (`test_x` -> `test_x__ztp01`), by the spans regorus's AST gives."""
    renames: dict[str, list[tuple[int, int, str]]] = {}
    for t in tests:
        if t.label != t.name and t.start >= 0:
            renames.setdefault(t.file, []).append((t.start, t.end, _renamed(t)))
    out = []
    for src in sources:
        todo = renames.get(src.path)
        if not todo:
            out.append(src)
            continue
        data = src.content
        for start, end, new in sorted(todo, reverse=True):
            data = data[:start] + new.encode() + data[end:]
        out.append(Source(src.root, src.rel, src.path, src.segments, data))
    return tuple(out)


def _renamed(t: _Test) -> str:
    return t.name + "__ztp" + t.label.rsplit("#", 1)[1]


def run_tests(
    paths: Sequence[str],
    data_paths: Sequence[str] = (),
    *,
    run: str | None = None,
    coverage: bool = False,
) -> TestReport:
    pattern = re.compile(run) if run else None
    try:
        sources = read_sources(paths, data_paths, include_tests=True)
        loaded = compile_sources(sources, probe=False)
        tests = _tests(loaded.engine.get_ast_as_json())
        if any(t.label != t.name for t in tests):
            loaded = compile_sources(_split_duplicates(sources, tests), probe=False)
    except LoadError as exc:
        return TestReport((), load_error=str(exc))
    engine = loaded.engine
    if coverage:
        engine.set_enable_coverage(True)
    outcomes = []
    for t in tests:
        full = f"data.{t.package}.{t.label}"
        if pattern is not None and not pattern.search(full):
            continue
        if t.name.startswith("todo_"):
            outcomes.append(TestOutcome(t.file, full, "SKIPPED", 0.0))
            continue
        rule = f"data.{t.package}.{_renamed(t) if t.label != t.name else t.name}"
        started = time.perf_counter()
        result = evaluate_loaded(engine, rule, None)
        took = time.perf_counter() - started
        if isinstance(result, str):
            outcomes.append(TestOutcome(t.file, full, "ERROR", took, result))
            continue
        status = "PASS" if result.defined and result.value is True else "FAIL"
        message = (
            ""
            if status == "PASS"
            else (
                "the rule is undefined: some expression in its body is false or undefined"
                if not result.defined
                else f"the rule's value is {json.dumps(result.value)[:80]}"
            )
        )
        outcomes.append(TestOutcome(t.file, full, status, took, message))
    cover: tuple[tuple[str, float, int, int], ...] = ()
    if coverage:
        cover = _coverage(engine.get_coverage_report_as_json())
    return TestReport(tuple(outcomes), coverage=cover)


def _coverage(report_json: str) -> tuple[tuple[str, float, int, int], ...]:
    """(file, percent, covered lines, not covered lines) per file."""
    out = []
    for f in json.loads(report_json).get("files", []):
        covered = len(f.get("covered", []))
        missed = len(f.get("not_covered", []))
        total = covered + missed
        out.append(
            (str(f.get("path", "")), 100.0 * covered / total if total else 100.0, covered, missed)
        )
    return tuple(sorted(out))


def report_json(report: TestReport) -> str:
    doc: dict[str, Any] = {
        "ok": report.ok,
        "tests": [
            {
                "file": o.file,
                "name": o.name,
                "status": o.status,
                "duration_ms": round(o.seconds * 1000, 3),
                "message": o.message,
            }
            for o in report.outcomes
        ],
    }
    if report.load_error:
        doc["error"] = report.load_error
    if report.coverage:
        doc["coverage"] = {
            "files": [
                {"file": f, "percent": round(p, 2), "covered": c, "not_covered": m}
                for f, p, c, m in report.coverage
            ]
        }
    return json.dumps(doc, indent=2)


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
    if report.coverage:
        print("coverage (lines evaluated):", file=out)
        for file, percent, covered, missed in report.coverage:
            print(f"  {file}: {percent:.1f}% ({covered}/{covered + missed})", file=out)
