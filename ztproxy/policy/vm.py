"""The compiled path of the embedded engine: regorus's Rego VM (RVM), one program per
decision path.

Takes the served modules, the data (JSON) and an `oracle`: the interpreter
(`regorus.Engine`) evaluating the same rule, which stays the authority. The VM gets the
input as the prepared canonical JSON (`prepared.PreparedInput.json`, already encoded
for the audit digest), so feeding it costs only its own JSON parse. Returns, per
decision, a `RawResult` or None, and None always means "ask the interpreter":

- the VM refused the policy for that path (`with` is not compiled yet, say) or
  disagreed with the interpreter on the probe inputs when it was compiled;
- the VM failed at run time (instruction limit, a value it cannot take);
- the VM answered `"<undefined>"`, which is how it reports an undefined rule *and*
  how it would print the string "<undefined>", and where it turns a builtin error
  (`1/0`) into undefined while the interpreter raises: only the interpreter tells
  these apart.

So the VM only ever serves a defined, marker-free value, and everything else keeps
the interpreter's exact behaviour. The VM is young (0.13 computes a wrong value for an
`else` chain inside a comprehension, found while writing the shipped policy), so its
answers are also checked against the interpreter: every one of the first
`VERIFY_FIRST` decisions per path after a load, then one in `VERIFY_EVERY`. A
disagreement takes the VM off that path until the next load (the interpreter answers,
log `policy_vm_disagrees`, stats `policy_vm_disagreements`). Known difference,
shared with OPA's default (non-strict) mode: a builtin error inside a condition makes
that condition undefined in the VM, an error in the interpreter; write conditions that
cannot error on the input's types (the shipped policy does). Programs are compiled on
first use of a path (or eagerly for the paths given at load), on the loop thread: RVM
objects, like engines, are pinned to the thread that made them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import regorus
import structlog

from .engine import RawResult
from .loader import short_error
from .prepared import PreparedInput

log = structlog.get_logger(__name__)

UNDEFINED_MARK = '"<undefined>"'
VERIFY_FIRST = 32
VERIFY_EVERY = 1024
MAX_PATHS = 256  # decision paths are few (one per route at most); never grow unbounded
MAX_MEMO = 1024  # distinct result texts kept parsed (allow, each deny combination, ...)

Oracle = Callable[[str, Mapping[str, Any]], "RawResult | str"]

# Probe inputs for the agreement check at compile time: nothing, and a full document.
_PROBES: tuple[dict[str, Any], ...] = (
    {},
    {
        "version": 1,
        "request": {"id": "probe", "method": "GET", "scheme": "https", "host": "probe.internal",
                    "path": "/probe", "parsed_path": ["probe"], "query": {}, "headers": {},
                    "protocol": "HTTP/1.1", "time": "2026-01-01T00:00:00.000Z"},
        "source": {"address": "127.0.0.1", "spiffe_id": "spiffe://probe.invalid/probe",
                   "certificate": {"fingerprint_sha256": "00" * 32, "subject": "",
                                   "issuer": "", "not_after": "2027-01-01T00:00:00.000Z",
                                   "uri_sans": [], "dns_sans": []}},
        "user": None,
        "device": None,
        "destination": {"service": "probe", "route": "probe"},
    },
)


class Vms:
    """Per decision path: a loaded `regorus.Rvm`, or None (the interpreter serves)."""

    def __init__(self, modules: Sequence[tuple[str, str]], data_json: str,
                 oracle: Oracle) -> None:
        self._modules = list(modules)
        self._data_json = data_json
        self._oracle = oracle
        self._vms: dict[str, regorus.Rvm | None] = {}
        self.served: dict[str, str] = {}  # rule -> "rvm" | "engine" (for logs and stats)
        self._runs: dict[str, int] = {}
        self._memo: dict[str, RawResult] = {}
        self.fallbacks = 0
        self.disagreements = 0

    @staticmethod
    def input_json(doc: Mapping[str, Any]) -> str:
        if isinstance(doc, PreparedInput):
            return doc.json
        return json.dumps(doc, ensure_ascii=False)

    def run(self, rule: str, doc: Mapping[str, Any]) -> RawResult | None:
        """The VM's own answer (None: it does not answer), not checked against anything:
        for tests and benchmarks. Decisions go through `evaluate`."""
        vm = self._vms.get(rule, False)
        if vm is False:
            vm = self.compile(rule)
        return None if vm is None else self._run(vm, doc)

    def evaluate(self, rule: str, doc: Mapping[str, Any]) -> RawResult | None:
        vm = self._vms.get(rule, False)
        if vm is False:
            vm = self.compile(rule)
        if vm is None:
            return None
        result = self._run(vm, doc)
        if result is None:
            self.fallbacks += 1
            return None
        runs = self._runs[rule] = self._runs.get(rule, 0) + 1
        if (runs <= VERIFY_FIRST or runs % VERIFY_EVERY == 0) and \
                not _agrees(self._oracle(rule, doc), result):
            self.disagreements += 1
            self._vms[rule] = None
            self.served[rule] = "engine"
            log.error("policy_vm_disagrees", rule=rule, served_by="engine")
            return None
        return result

    def _run(self, vm: regorus.Rvm, doc: Mapping[str, Any]) -> RawResult | None:
        try:
            vm.set_input_json(self.input_json(doc))
            text = vm.execute()
        except (RuntimeError, TypeError, ValueError):  # the interpreter will say what
            return None
        known = self._memo.get(text)
        if known is not None:
            return known
        if UNDEFINED_MARK in text:
            return None
        result = RawResult(defined=True, value=json.loads(text), text=text)
        if len(self._memo) >= MAX_MEMO:
            self._memo.clear()
        self._memo[text] = result
        return result

    def compile(self, rule: str) -> regorus.Rvm | None:
        """Compile, load and probe the program for `rule`; None when the VM cannot
        serve it. Remembered either way (until the next load)."""
        if len(self._vms) >= MAX_PATHS:
            return None
        vm, why = self._build(rule)
        self._vms[rule] = vm
        self.served[rule] = "rvm" if vm is not None else "engine"
        if vm is None:
            log.warning("policy_vm_refused", rule=rule, served_by="engine", why=why)
        else:
            log.info("policy_vm_ready", rule=rule, served_by="rvm")
        return vm

    def _build(self, rule: str) -> tuple[regorus.Rvm | None, str]:
        try:
            program = regorus.Program.compile_from_modules(self._data_json, self._modules,
                                                           [rule])
            vm = regorus.Rvm()
            vm.load_program(program)
            vm.set_data_json(self._data_json)
        except RuntimeError as exc:
            return None, short_error(exc)
        for probe in _PROBES:
            mine = self._run(vm, probe)
            if mine is not None and not _agrees(self._oracle(rule, probe), mine):
                return None, "the VM disagrees with the interpreter on a probe input"
        return vm, ""


def _agrees(theirs: RawResult | str, mine: RawResult) -> bool:
    """Same defined value (an interpreter error never agrees with a VM value)."""
    if isinstance(theirs, str) or not theirs.defined:
        return False
    return _normal(theirs.value) == _normal(mine.value)


def _normal(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=sorted)
