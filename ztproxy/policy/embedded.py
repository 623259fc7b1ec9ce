"""The embedded engine: Rego evaluated in-process by regorus (Microsoft's Rust Rego).

Takes policy and data directories (see `loader`); evaluates the decision path for an
input document and returns the raw value (`engine.RawResult`), undefined kept apart.

Two evaluators: the compiled VM (`vm.Vms`, one program per decision path) serves every
decision it can answer; the interpreter (`regorus.Engine`) answers the rest (undefined,
errors, policies the VM refuses), checks a sample of the VM's answers, and is what
`ztproxy policy test` runs. `use_vm=False` keeps the interpreter only.

Concurrency: a regorus `Engine` is not re-entrant (input is set, then a rule is
evaluated). Evaluation runs inline on the event loop: it costs about 50 us with the
VM (a few hundred with the interpreter), less than a
hop to a worker thread and back, and on one loop thread nothing interleaves between
`set_input` and `eval_rule`, so no lock is needed. Several cores are used by several
worker processes, each with its own engine. The price: a pathological policy blocks
the loop for as long as it runs (timeout_ms cannot interrupt Rust code); the shipped
policies are linear in the size of their data. Loading and compiling (file I/O, parse)
build a fresh engine that is swapped in whole, so requests never see a half-loaded
policy and a failed reload keeps the last good one. Files are read in a worker thread;
the engine is built on the loop thread, because a regorus Engine is pinned to the
thread that made it (pyo3 `unsendable`: using it elsewhere panics).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import regorus
import structlog

from .engine import ENGINE_ERROR, UNAVAILABLE, UNDEFINED, EngineError, RawResult
from .loader import Loaded, LoadError, Source, compile_sources, read_sources, short_error, walk
from .reads import Path, input_paths
from .vm import Vms

log = structlog.get_logger(__name__)

Fingerprint = tuple[tuple[str, int, int], ...]


def plain(value: Any) -> Any:
    """regorus returns Rego sets as Python sets; OPA serialises them as sorted arrays."""
    if isinstance(value, (set, frozenset)):
        items = [plain(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


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


class EmbeddedEngine:
    name = "embedded"

    def __init__(self, policy_dirs: Sequence[str], data_dirs: Sequence[str] = (), *,
                 use_vm: bool = True, decision_paths: Sequence[str] = ()) -> None:
        self._policy_dirs = tuple(policy_dirs)
        self._data_dirs = tuple(data_dirs)
        self._use_vm = use_vm
        self._rules = tuple(_rule(p) for p in decision_paths)
        self._loaded: Loaded | None = None
        self._vms: Vms | None = None
        self._fingerprint: Fingerprint = ()
        self._lock = asyncio.Lock()
        self.last_error = ""
        # what the loaded modules can read of the input (reads.py); None: all of it
        self.input_paths: tuple[Path, ...] | None = None

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
        return compile_sources(sources), fp

    def _install(self, loaded: Loaded, fp: Fingerprint) -> None:
        vms = None
        if self._use_vm:
            engine = loaded.engine
            vms = Vms(loaded.modules, loaded.data_json,
                      lambda rule, doc: _evaluate(engine, rule, doc))
            for rule in self._rules:
                vms.compile(rule)
        self._loaded, self._vms, self._fingerprint = loaded, vms, fp
        self.input_paths = input_paths(text for _, text in loaded.modules)

    @property
    def vm_stats(self) -> dict[str, float]:
        vms = self._vms
        if vms is None:
            return {"policy_vm_paths": 0.0, "policy_vm_fallbacks": 0.0,
                    "policy_vm_disagreements": 0.0}
        return {"policy_vm_paths": float(sum(v == "rvm" for v in vms.served.values())),
                "policy_vm_fallbacks": float(vms.fallbacks),
                "policy_vm_disagreements": float(vms.disagreements)}

    def served_by(self, decision_path: str) -> str:
        """"rvm" or "engine": who answers this path now (compiling it if need be)."""
        vms = self._vms
        if vms is None:
            return "engine"
        rule = _rule(decision_path)
        if rule not in vms.served:
            vms.compile(rule)
        return vms.served.get(rule, "engine")

    async def start(self) -> None:
        """Load the policy; raises LoadError when the first load fails (fail at start)."""
        loaded, fp = await self._load()
        self._install(loaded, fp)
        log.info("policy_loaded", engine=self.name, revision=loaded.revision,
                 files=len(loaded.rego_files) + len(loaded.data_files))

    async def reload(self) -> bool:
        async with self._lock:
            try:
                loaded, fp = await self._load()
            except LoadError as exc:
                self.last_error = str(exc)
                # the fingerprint moves on, so a broken file is reported once, not every poll
                self._fingerprint = await asyncio.to_thread(
                    fingerprint, self._policy_dirs + self._data_dirs)
                log.error("policy_reload_failed", engine=self.name, error=str(exc),
                          kept_revision=self.revision)
                return False
            old = self.revision
            self._install(loaded, fp)
            self.last_error = ""
            log.info("policy_reloaded", engine=self.name, revision=loaded.revision,
                     previous_revision=old)
            return True

    def changed_on_disk(self) -> bool:
        return fingerprint(self._policy_dirs + self._data_dirs) != self._fingerprint

    async def close(self) -> None:
        self._loaded = self._vms = None

    async def evaluate(self, decision_path: str, input_doc: Mapping[str, Any]) -> RawResult:
        return self.evaluate_sync(decision_path, input_doc)

    def evaluate_sync(self, decision_path: str, input_doc: Mapping[str, Any]) -> RawResult:
        loaded = self._loaded
        if loaded is None:
            raise EngineError(UNAVAILABLE, "no policy loaded")
        rule = _rule(decision_path)
        vms = self._vms
        if vms is not None:
            served = vms.evaluate(rule, input_doc)
            if served is not None:
                return served
        outcome = _evaluate(loaded.engine, rule, input_doc)
        del loaded, vms  # no engine in this frame if the error below joins a reference cycle
        if isinstance(outcome, str):
            raise EngineError(ENGINE_ERROR, outcome)
        return outcome


def _rule(decision_path: str) -> str:
    return "data." + decision_path.replace("/", ".")


def _evaluate(engine: regorus.Engine, rule: str, input_doc: Mapping[str, Any]
              ) -> RawResult | str:
    """The raw result, or an error message. Returns rather than raises so that no
    exception traceback holds a frame with the engine (regorus engines must be dropped
    on their own thread; a traceback in a cycle may be collected on any thread)."""
    try:
        try:
            engine.set_input(input_doc)
        except (TypeError, ValueError):
            engine.set_input_json(json.dumps(input_doc))
        try:
            value = engine.eval_rule(rule)
        except RuntimeError as exc:
            if "not a valid rule path" not in str(exc):
                return short_error(exc)
            return _query(engine, rule)
        if value is None:  # undefined, or a rule whose value is null
            return _query(engine, rule)
        return RawResult(defined=True, value=plain(value))
    except RuntimeError as exc:
        return short_error(exc)


def _query(engine: regorus.Engine, rule: str) -> RawResult:
    """Slow path (a query is parsed each time) that tells undefined from null, and
    evaluates paths that are packages or prefixes rather than rules."""
    answer = json.loads(engine.eval_query_as_json(rule))
    rows = answer.get("result") if isinstance(answer, dict) else None
    if not rows:
        return UNDEFINED
    expressions = rows[0].get("expressions") or []
    if not expressions:
        return UNDEFINED
    return RawResult(defined=True, value=expressions[0].get("value"))
