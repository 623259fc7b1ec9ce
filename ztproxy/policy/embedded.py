"""The embedded engine: Rego evaluated in-process by regorus (Microsoft's Rust Rego).

Takes policy and data directories (see `loader`); evaluates the decision path for an
input document and returns the raw value (`engine.RawResult`), undefined kept apart.

One evaluator serves every decision: regorus's interpreter (`regorus.Engine`), the
same one `ztproxy policy test` and `ztproxy policy eval` run. regorus's compiled VM is
not used: it disagreed with OPA and with the interpreter on valid policies (ref-head
rules under `not`, builtin errors turned into undefined), and a sampled cross-check
cannot make a decision it served alone sound. A policy set is accepted only when the
load-time checks pass (`checks`: builtin allowlist, rule/data conflicts, the decision
rule exists); see docs/rego-authors.md.

The input goes to the engine as JSON text (the prepared input's canonical JSON, made
once per request for the audit digest anyway) and the result comes back as JSON text:
no Python conversion of sets (a set of arrays is unhashable in Python) or of numbers.

Concurrency: a regorus `Engine` is not re-entrant (input is set, then a rule is
evaluated). Evaluation runs inline on the event loop, and on one loop thread nothing
interleaves between `set_input_json` and `eval_rule_as_json`, so no lock is needed.
Several cores are used by several worker processes, each with its own engine. The
price: a pathological policy blocks the loop for as long as it runs (timeout_ms cannot
interrupt Rust code). Loading builds a fresh engine that is swapped in whole, so
requests never see a half-loaded policy and a failed reload keeps the last good one.
Files are read in a worker thread; the engine is built on the loop thread, because a
regorus Engine is pinned to the thread that made it (pyo3 `unsendable`).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import regorus
import structlog

from .checks import Facts, holds_astral
from .engine import (
    ENGINE_ERROR,
    INPUT_NUMBER,
    INPUT_STRING,
    UNAVAILABLE,
    UNDEFINED,
    EngineError,
    RawResult,
)
from .loader import (
    Loaded,
    LoadError,
    Source,
    compile_sources,
    read_sources,
    release_parked,
    short_error,
    walk,
)
from .prepared import PreparedInput

log = structlog.get_logger(__name__)

Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(roots: Sequence[str]) -> Fingerprint:
    """(path, mtime_ns, size) of every file under the roots: a stat-only change check."""
    out = []
    for root in roots:
        if not os.path.exists(root):
            continue
        for _, path in walk(root):
            try:
                st = os.stat(path)
            except OSError:
                continue
            out.append((path, st.st_mtime_ns, st.st_size))
    return tuple(out)


ENGINE_NAME = "embedded-regorus"  # the audit record's `engine`


class EmbeddedEngine:
    name = "embedded"
    engine_name = ENGINE_NAME

    def __init__(
        self,
        policy_dirs: Sequence[str],
        data_dirs: Sequence[str] = (),
        *,
        decision_paths: Sequence[str] = (),
    ) -> None:
        self._policy_dirs = tuple(policy_dirs)
        self._data_dirs = tuple(data_dirs)
        self._decision_paths = tuple(decision_paths)
        self._loaded: Loaded | None = None
        self._fingerprint: Fingerprint = ()
        self._lock = asyncio.Lock()
        self.last_error = ""

    @property
    def revision(self) -> str:
        return self._loaded.revision if self._loaded else ""

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def _read(self) -> tuple[tuple[Source, ...], Fingerprint]:
        fp = fingerprint(self._policy_dirs + self._data_dirs)
        return read_sources(self._policy_dirs, self._data_dirs), fp

    async def _load(self) -> tuple[Loaded, Fingerprint]:
        # read in a worker thread; compile here, on the loop thread that will evaluate
        sources, fp = await asyncio.to_thread(self._read)
        return compile_sources(sources, decision_paths=self._decision_paths), fp

    def _install(self, loaded: Loaded, fp: Fingerprint) -> None:
        self._loaded, self._fingerprint = loaded, fp

    @property
    def facts(self) -> Facts | None:
        """What the load-time checks read from the loaded modules (None: not loaded)."""
        loaded = self._loaded
        return loaded.facts if loaded is not None else None

    def add_decision_path(self, decision_path: str) -> None:
        """Check this path too at the next load (a route's own decision path)."""
        if decision_path not in self._decision_paths:
            self._decision_paths += (decision_path,)

    async def start(self) -> None:
        """Load the policy; raises LoadError when the first load fails (fail at start)."""
        loaded, fp = await self._load()
        self._install(loaded, fp)
        log.info(
            "policy_loaded",
            engine=self.name,
            revision=loaded.revision,
            files=len(loaded.rego_files) + len(loaded.data_files),
        )

    async def reload(self) -> bool:
        async with self._lock:
            try:
                loaded, fp = await self._load()
            except Exception as exc:  # noqa: BLE001 - any bad file keeps the old policy
                message = (
                    str(exc)
                    if isinstance(exc, LoadError)
                    else f"policy load failed ({type(exc).__name__})"
                )
                self.last_error = message
                # the fingerprint moves on, so a broken file is reported once, not every poll
                self._fingerprint = await asyncio.to_thread(
                    fingerprint, self._policy_dirs + self._data_dirs
                )
                log.error(
                    "policy_reload_failed",
                    engine=self.name,
                    error=message,
                    kept_revision=self.revision,
                )
                return False
            old = self.revision
            self._install(loaded, fp)
            self.last_error = ""
            log.info(
                "policy_reloaded", engine=self.name, revision=loaded.revision, previous_revision=old
            )
            return True

    def changed_on_disk(self) -> bool:
        return fingerprint(self._policy_dirs + self._data_dirs) != self._fingerprint

    async def close(self) -> None:
        self._loaded = None
        release_parked()

    async def evaluate(self, decision_path: str, input_doc: Mapping[str, Any]) -> RawResult:
        return self.evaluate_sync(decision_path, input_doc)

    def evaluate_sync(self, decision_path: str, input_doc: Mapping[str, Any]) -> RawResult:
        loaded = self._loaded
        if loaded is None:
            raise EngineError(UNAVAILABLE, "no policy loaded")
        problem = unsupported_number(input_doc)
        if problem is not None:
            raise EngineError(INPUT_NUMBER, problem)
        if loaded.counts and holds_astral(input_json(input_doc) or ""):
            raise EngineError(
                INPUT_STRING,
                "input holds a character beyond U+FFFF and the "
                "policy calls count (the embedded engine counts it twice)",
            )
        outcome = evaluate_loaded(
            loaded.engine, _rule(decision_path), input_doc, numbers_checked=True
        )
        del loaded  # no engine in this frame if the error below joins a reference cycle
        if isinstance(outcome, str):
            raise EngineError(ENGINE_ERROR, outcome)
        return outcome


def _rule(decision_path: str) -> str:
    return "data." + decision_path.replace("/", ".")


def input_json(input_doc: Mapping[str, Any] | None) -> str | None:
    """The input as JSON text for the engine (None: no input document at all)."""
    if input_doc is None:
        return None
    if isinstance(input_doc, PreparedInput):
        return input_doc.json
    return json.dumps(input_doc, ensure_ascii=False, allow_nan=False)


# Numbers regorus computes differently from OPA. A non-integer is a float64 in regorus
# and an exact decimal in OPA (0.1 * 3 vs 0.3; a set holds 1 and 1.0 as one element;
# `a[1.0]` selects an element where OPA is undefined); an integer from 2^53 on may be
# rounded. The load checks keep both out of policies and data (checks.py: literals
# and operators, loader: data files); an input holding one is not evaluated (503,
# `engine.INPUT_NUMBER`) rather than decided on a value OPA would not see. The proxy's
# prepared input proves both cheaply: the input stage knows whether a token claim
# holds a float (`no_floats`, the only place one can be), and orjson's 53-bit check
# proves the integers while encoding (`exact_ints`); anything else is walked.
EXACT_INT_LIMIT = 1 << 53


def inexact_number(value: Any) -> bool:
    """Whether the document holds an integer regorus would round."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not -EXACT_INT_LIMIT < value < EXACT_INT_LIMIT
    if isinstance(value, Mapping):
        return any(inexact_number(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(inexact_number(v) for v in value)
    return False


def holds_float(value: Any) -> bool:
    """Whether the document holds a float (1.0 included: JSON `1.0` is a non-integer
    number to OPA, kept apart from 1)."""
    if isinstance(value, float):
        return True
    if isinstance(value, Mapping):
        return any(holds_float(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(holds_float(v) for v in value)
    return False


def unsupported_number(input_doc: Mapping[str, Any] | None) -> str | None:
    """Why the embedded engine may not evaluate this input (None: it may)."""
    if input_doc is None:
        return None
    prepared = input_doc if isinstance(input_doc, PreparedInput) else None
    if not (prepared is not None and prepared.no_floats) and holds_float(input_doc):
        return (
            "input holds a non-integer number (the embedded engine computes it in "
            "float64, OPA exactly)"
        )
    if not (prepared is not None and prepared.exact_ints) and inexact_number(input_doc):
        return "input holds an integer beyond 2^53 (the embedded engine would round it)"
    return None


def evaluate_loaded(
    engine: regorus.Engine,
    rule: str,
    input_doc: Mapping[str, Any] | None,
    *,
    numbers_checked: bool = False,
) -> RawResult | str:
    """The raw result, or an error message. Returns rather than raises so that no
    exception traceback holds a frame with the engine (regorus engines must be dropped
    on their own thread; a traceback in a cycle may be collected on any thread).
    `value` is the parsed JSON; `text` the JSON text regorus printed (the same text is
    the same value, so the decider may parse a Decision once per text)."""
    try:
        text = input_json(input_doc)
    except (TypeError, ValueError) as exc:
        return f"input is not JSON ({type(exc).__name__})"
    problem = None if numbers_checked else unsupported_number(input_doc)
    if problem is not None:
        return problem
    try:
        if text is not None:  # None: no input document (give an engine never set one)
            engine.set_input_json(text)
        out = engine.eval_rule_as_json(rule)
    except RuntimeError as exc:
        if "not a valid rule path" in str(exc):
            return _query(engine, rule)
        return short_error(exc)
    except Exception as exc:  # noqa: BLE001 - a Rust panic or a conversion: fail closed
        return f"evaluation failed ({type(exc).__name__})"
    if out == '"<undefined>"':  # or a rule whose value is that very string: ask again
        return _query(engine, rule)
    try:
        value = json.loads(out)
    except ValueError:
        return "engine printed a result that is not JSON"
    return RawResult(defined=True, value=value, text=out)


def _query(engine: regorus.Engine, rule: str) -> RawResult | str:
    """Slow path (a query is parsed each time) that tells undefined from a value, and
    evaluates paths that are packages or prefixes rather than rules."""
    try:
        answer = json.loads(engine.eval_query_as_json(rule))
    except RuntimeError as exc:
        return short_error(exc)
    except Exception as exc:  # noqa: BLE001 - fail closed
        return f"evaluation failed ({type(exc).__name__})"
    rows = answer.get("result") if isinstance(answer, dict) else None
    if not rows:
        return UNDEFINED
    expressions = rows[0].get("expressions") or []
    if not expressions:
        return UNDEFINED
    return RawResult(defined=True, value=expressions[0].get("value"))
