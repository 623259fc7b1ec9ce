"""Loads Rego and data files from directories into a fresh regorus engine.

Takes policy roots and data roots (absolute directories); returns a `Loaded` (engine,
revision, file list) or raises `LoadError` naming the file and the first error line.
Follows OPA's own loader so `opa test` / `opa run` on the same directories see the
same documents: `.rego` files anywhere under a policy root; `.json`/`.yaml`/`.yml` data
files are merged under `data` at the path of their directory relative to the root (the
file name does not count: `policies/ztproxy/segmentation/data.json` is
`data.ztproxy.segmentation`). Names starting with "." are skipped (editor files).
`*_test.rego` are skipped unless `include_tests` (the test runner). Reading
(`read_sources`, blocking file I/O) runs in a worker thread; compiling
(`compile_sources`) runs on the thread that will evaluate, since regorus engines are
pinned to their thread.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import regorus

from .checks import Facts, analyze, astral_problem, data_conflicts, missing_decision
from .revision import compute_revision
from .yamldata import load_yaml

_DATA_EXT = (".json", ".yaml", ".yml")


class LoadError(Exception):
    """A policy set that cannot be served. `str()` is one line naming the file, the
    line where known, and the construct; never a traceback, never input values."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()) or "policy does not load")


# Engines whose `Loaded` was collected on a thread other than the one that made them,
# each with that owner thread: (owner, engine). A regorus Engine is pyo3 `unsendable`;
# dropped on a foreign thread it is leaked with an "unraisable" RuntimeError. The
# cyclic garbage collector runs on whichever thread happens to allocate (often a
# `to_thread` worker reading files), so a `Loaded` caught in any reference cycle (a
# decider in a task, a traceback) can die there. `Loaded.__del__` parks its engine
# here instead, and `release_parked()` on the owner thread drops it. Only `append` and
# `pop` touch the list: atomic under the GIL, no lock a finalizer could deadlock on.
_PARKED: list[tuple[threading.Thread, Any]] = []


def release_parked() -> int:
    """Drop the engines parked for this thread; returns how many. Called where the
    owner thread compiles, reloads and closes, so the parked set stays bounded."""
    me = threading.current_thread()
    mine: list[Any] = []
    others: list[tuple[threading.Thread, Any]] = []
    while True:
        try:
            item = _PARKED.pop()
        except IndexError:
            break
        (mine if item[0] is me else others).append(item)
    _PARKED.extend(others)
    count = len(mine)
    mine.clear()  # the engines die here, on their own thread
    return count


@dataclass(frozen=True, slots=True)
class Loaded:
    engine: regorus.Engine
    revision: str
    rego_files: tuple[str, ...]
    data_files: tuple[str, ...]
    packages: tuple[str, ...]
    modules: tuple[tuple[str, str], ...] = ()  # (path, Rego text)
    data_json: str = "{}"  # the merged data document
    facts: Facts | None = None  # what the load-time checks read from the AST
    owner: threading.Thread = field(
        default_factory=threading.current_thread, compare=False, repr=False
    )

    def __del__(self) -> None:
        if threading.current_thread() is not self.owner:
            _PARKED.append((self.owner, self.engine))

    @property
    def counts(self) -> bool:
        """Whether the modules call `count` (see checks.ASTRAL)."""
        return self.facts is None or "count" in self.facts.builtins


def short_error(exc: BaseException) -> str:
    """regorus errors carry source excerpts and (with RUST_BACKTRACE) a stack trace.
    Keep the location line and the `error:` line only: enough for an operator, and
    never a value from the input."""
    text = str(exc)
    where, what = "", ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("-->") and not where:
            where = stripped[3:].strip()
        elif stripped.startswith("error:") and not what:
            what = stripped[6:].strip()
        elif stripped.startswith("Stack backtrace"):
            break
    if not what:
        what = (
            text.split("Stack backtrace", 1)[0].strip().splitlines()[0]
            if text.strip()
            else type(exc).__name__
        )
    return f"{where}: {what}" if where else what


def walk(root: str) -> Iterator[tuple[tuple[str, ...], str]]:
    """(directory path relative to root as segments, file path), sorted, no dot-names."""
    if os.path.isfile(root):
        yield (), root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root)
        segments = () if rel == "." else tuple(rel.split(os.sep))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield segments, os.path.join(dirpath, name)


def merge_data(into: dict[str, Any], doc: dict[str, Any], where: str) -> None:
    for key, value in doc.items():
        if key in into and isinstance(into[key], dict) and isinstance(value, dict):
            merge_data(into[key], value, where)
        elif key in into:
            raise LoadError(f"{where}: data conflicts with another file at key {key!r}")
        else:
            into[key] = value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"member {key[:40]!r}: duplicate")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name}: not a JSON number")


def _exact_numbers(value: Any, path: str) -> None:
    """Data numbers must be integers below 2^53 in magnitude, else LoadError: regorus
    computes non-integers in float64 (OPA: exact decimals) and may round larger
    integers. (JSON non-integers are refused while parsing, with their line.)"""
    if isinstance(value, bool):
        return
    if isinstance(value, float):
        raise LoadError(
            f"{path}: number {repr(value)[:30]}: non-integer numbers are refused "
            "(the embedded engine computes them in float64, OPA exactly; "
            "quote it or scale it to an integer)"
        )
    if isinstance(value, int):
        if not -(1 << 53) < value < (1 << 53):
            raise LoadError(
                f"{path}: number {str(value)[:30]}: integers from 2^53 on are "
                "rounded by the embedded engine (quote it)"
            )
    elif isinstance(value, dict):
        for v in value.values():
            _exact_numbers(v, path)
    elif isinstance(value, list):
        for v in value:
            _exact_numbers(v, path)


class _NonInteger(ValueError):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _no_float(text: str) -> Any:
    """json's parse_float: any number with a fraction or an exponent (`1.0`, `1e3`)."""
    raise _NonInteger(text)


def _number_line(content: bytes, text: str) -> int:
    """The line of the first number token `text` outside strings (for the message)."""
    data = content.decode("utf-8", "replace")
    line, i, n, in_string = 1, 0, len(data), False
    while i < n:
        c = data[i]
        if in_string:
            if c == "\\":
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif data.startswith(text, i) and (i == 0 or data[i - 1] in " \t\r\n[:,"):
            return line
        if c == "\n":
            line += 1
        i += 1
    return 0


def parse_data(path: str, content: bytes) -> Any:
    doc = _parse_data_raw(path, content)
    _exact_numbers(doc, path)
    return doc


def _parse_data_raw(path: str, content: bytes) -> Any:
    if path.endswith(".json"):
        try:
            return json.loads(
                content,
                object_pairs_hook=_no_duplicates,
                parse_constant=_no_constant,
                parse_float=_no_float,
            )
        except json.JSONDecodeError as exc:
            raise LoadError(f"{path}:{exc.lineno}: JSON: {exc.msg}") from None
        except _NonInteger as exc:
            at = _number_line(content, exc.text)
            raise LoadError(
                f"{path}{f':{at}' if at else ''}: JSON: number "
                f"{exc.text[:30]}: non-integer numbers are refused (the "
                "embedded engine computes them in float64, OPA exactly; "
                "quote it or scale it to an integer)"
            ) from None
        except (ValueError, RecursionError) as exc:
            raise LoadError(f"{path}: JSON: {exc}") from None
    try:
        return load_yaml(content)
    except ValueError as exc:  # "line N: construct: problem"
        text = str(exc)
        if text.startswith("line "):
            line, _, rest = text[5:].partition(": ")
            raise LoadError(f"{path}:{line}: YAML: {rest}") from None
        raise LoadError(f"{path}: {text}") from None
    except RecursionError:
        raise LoadError(f"{path}: YAML: nested too deeply") from None


@dataclass(frozen=True, slots=True)
class Source:
    root: int  # index of the root it was found under
    rel: str  # path relative to that root
    path: str
    segments: tuple[str, ...]  # directory path under the root: where data is merged
    content: bytes

    @property
    def is_rego(self) -> bool:
        return self.path.endswith(".rego")


def read_sources(
    policy_roots: Sequence[str], data_roots: Sequence[str] = (), *, include_tests: bool = False
) -> tuple[Source, ...]:
    """Blocking file I/O: run it in a worker thread."""
    out = []
    roots = [(r, True) for r in policy_roots] + [(r, False) for r in data_roots]
    for index, (root, with_rego) in enumerate(roots):
        if not os.path.exists(root):
            raise LoadError(f"{root}: directory not found")
        for segments, path in walk(root):
            is_rego = path.endswith(".rego")
            if is_rego and (not with_rego or (path.endswith("_test.rego") and not include_tests)):
                continue
            if not is_rego and not path.endswith(_DATA_EXT):
                continue
            try:
                with open(path, "rb") as fh:
                    content = fh.read()
            except OSError as exc:
                raise LoadError(f"{path}: cannot read ({exc.strerror})") from None
            out.append(Source(index, os.path.relpath(path, root), path, segments, content))
    if not any(s.is_rego for s in out):
        raise LoadError("no .rego files found in " + ", ".join(policy_roots))
    return tuple(out)


def compile_sources(
    sources: Sequence[Source],
    *,
    probe: bool = True,
    decision_paths: Sequence[str] = (),
    revision: str | None = None,
) -> Loaded:
    """Parse into a fresh engine. A regorus Engine is pinned to the thread that made
    it (pyo3 `unsendable`): call this on the thread that will evaluate (the event loop
    thread for the server). CPU only, no I/O: about a millisecond for the shipped set.

    Errors are returned by the helpers rather than raised through them, so that no
    traceback frame keeps an engine alive: a frame caught in a reference cycle could
    otherwise be collected (and the engine dropped) on another thread."""
    release_parked()
    engine = regorus.Engine()
    rego_files: list[str] = []
    data_files: list[str] = []
    modules: list[tuple[str, str]] = []
    data_json: list[str] = []
    problem = _fill(engine, sources, rego_files, data_files, modules, data_json)
    packages: tuple[str, ...] = ()
    facts: Facts | None = None
    if problem is None:
        packages = tuple(engine.get_packages())
        facts, problem = _check(engine, data_json[0], decision_paths)
        if problem is None and facts is not None:
            problem = astral_problem(facts, modules, data_json[0])
    if problem is None and probe:
        problem = _probe(engine, packages)
    if problem is not None:
        del engine
        raise LoadError(problem)
    if revision is None:  # a bundle brings its own (manifest revision + its SHA-256)
        revision = compute_revision((s.root, s.rel, s.content) for s in sources)
    return Loaded(
        engine,
        revision,
        tuple(rego_files),
        tuple(data_files),
        packages,
        tuple(modules),
        data_json[0],
        facts,
    )


def _check(
    engine: regorus.Engine, data_json: str, decision_paths: Sequence[str]
) -> tuple[Facts | None, str | None]:
    """The AST checks (checks.py): the first problem, or None."""
    try:
        facts = analyze(engine.get_ast_as_json())
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        return None, f"policy AST: {type(exc).__name__}"
    problems = list(facts.problems)
    problems += data_conflicts(facts, json.loads(data_json))
    for path in decision_paths:
        missing = missing_decision(facts, path)
        if missing:
            problems.append(missing)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return facts, problems[0] + more
    return facts, None


def add_data(data: dict[str, Any], src: Source) -> bool:
    """Merge a data file into `data` at its directory's path; False for an empty file.
    Raises LoadError (does not parse, not an object at the root, a conflict)."""
    doc = parse_data(src.path, src.content)
    if doc is None:
        return False
    for segment in reversed(src.segments):
        doc = {segment: doc}
    if not isinstance(doc, dict):
        raise LoadError(f"{src.path}: data at the root must be an object")
    merge_data(data, doc, src.path)
    return True


def _fill(
    engine: regorus.Engine,
    sources: Sequence[Source],
    rego_files: list[str],
    data_files: list[str],
    modules: list[tuple[str, str]],
    data_json: list[str],
) -> str | None:
    data: dict[str, Any] = {}
    for src in sources:
        if src.is_rego:
            try:
                text = src.content.decode("utf-8")
                engine.add_policy(src.path, text)
            except RuntimeError as exc:
                return short_error(exc)
            except (TypeError, ValueError, OverflowError) as exc:
                return f"{src.path}: {type(exc).__name__}"
            except UnicodeDecodeError:
                return f"{src.path}: not UTF-8"
            rego_files.append(src.path)
            modules.append((src.path, text))
            continue
        try:
            if not add_data(data, src):
                continue
        except LoadError as exc:
            return str(exc)
        data_files.append(src.path)
    data_json.append(json.dumps(data))
    try:
        engine.add_data_json(data_json[0])
    except RuntimeError as exc:
        return f"data: {short_error(exc)}"
    return None


def load(
    policy_roots: Sequence[str],
    data_roots: Sequence[str] = (),
    *,
    include_tests: bool = False,
    decision_paths: Sequence[str] = (),
) -> Loaded:
    """Read and compile on the calling thread (the CLI, check-config, the test runner).
    Raises LoadError (one line) for anything the server would refuse."""
    sources = read_sources(policy_roots, data_roots, include_tests=include_tests)
    return compile_sources(sources, probe=not include_tests, decision_paths=decision_paths)


def _probe(engine: regorus.Engine, packages: Sequence[str]) -> str | None:
    """regorus parses on load but resolves rules lazily: evaluate every package once
    without input so unsafe variables and input-independent errors fail the load (and
    a reload keeps the last good policy) instead of failing requests."""
    for package in packages:
        try:
            engine.eval_query_as_json(package)  # JSON: a set of arrays is no Python set
        except RuntimeError as exc:
            return short_error(exc)
        except Exception as exc:  # noqa: BLE001 - a panic or conversion: refuse, one line
            return f"{package}: evaluation failed ({type(exc).__name__})"
    return None
