"""Stage 5's decider (`seams.Decider`): cache, breaker, engine, result parsing, reload.

Takes a decision path and the policy input document (built by
`stages.policy_input`); returns a `model.Decision` or raises
`errors.ServiceUnavailable(reason)` when the engine cannot answer (the pipeline turns
that into 503). Order of work for one decision:

    cache hit?  -> the cached Decision with cached=True (allow or well-formed deny only);
                   the key is the decision path, the revision and the digest of the
                   WHOLE input, leaving out `request.id` / `request.time` only when
                   no loaded module can read them (`checks.Facts.reads`, from
                   regorus's AST; a bare `input`, a dynamic index or `with input`
                   counts as reading everything). The engine always gets the whole
                   input.
    breaker open? -> ServiceUnavailable("policy_circuit_open"), engine not asked
    engine.evaluate -> EngineError -> breaker.failure, ServiceUnavailable(reason)
                   (policy_input_unsupported_number: the input's fault, the breaker
                   is not charged)
    result.parse_result -> invalid -> deny "policy_result_invalid" (403), not cached

Reload (SIGHUP via `reload()`, or a file change seen by the watcher every
`watch_interval_ms`) compiles a fresh engine off the loop and swaps it; a failure keeps
the last good policy. A successful reload clears the cache. Trusts the input document
as already verified; logs only reason codes, paths and revisions, never the input.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
import structlog

from ..config.policy import check_decision_path
from ..errors import ConfigError, ServiceUnavailable
from ..metrics import Metrics
from ..model import Decision
from .breaker import OPEN, Breaker
from .cache import CacheKey, DecisionCache
from .canonical import canonical_bytes
from .engine import CIRCUIT_OPEN, ENGINE_ERROR, INPUT_REFUSALS, EngineError, PolicyEngine
from .loader import LoadError
from .prepared import full_sha256, stable_sha256
from .result import ALLOW, parse_result

log = structlog.get_logger(__name__)


class PolicyDecider:
    def __init__(
        self,
        engine: PolicyEngine,
        *,
        cache: DecisionCache,
        breaker: Breaker | None,
        metrics: Metrics | None = None,
        watch_interval_s: float | None = None,
    ) -> None:
        self.engine = engine
        self.cache = cache
        self.breaker = breaker
        self._metrics = metrics if metrics is not None else Metrics()
        self._watch_interval = watch_interval_s
        self._watch_task: asyncio.Task[None] | None = None
        self._valid_paths: set[str] = set()
        # (revision, static read paths or None, whether request id/time may be left out)
        self._key_plan: tuple[str, tuple[tuple[str, ...], ...] | None, bool] | None = None
        # VM result text -> its parsed Decision (valid results only; bounded)
        self._parsed: dict[str, Decision] = {}
        self._counts = {
            "decisions": 0,
            "cache_hits": 0,
            "cache_misses": 0,
            "errors": 0,
            "invalid": 0,
            "reloads_ok": 0,
            "reloads_failed": 0,
        }
        # label children bound once: a labels() lookup per decision costs more than the
        # whole cache hit is allowed to
        m, name = self._metrics, engine.name
        self._m_hit = m.decision_cache.labels("hit")
        self._m_miss = m.decision_cache.labels("miss")
        self._m_allow = m.policy_decisions.labels(name, "allow")
        self._m_deny = m.policy_decisions.labels(name, "deny")
        self._m_seconds = m.policy_seconds.labels(name)

    # -- seams.Decider -------------------------------------------------------------
    @property
    def revision(self) -> str:
        return self.engine.revision

    async def decide(self, decision_path: str, input_doc: Mapping[str, Any]) -> Decision:
        if decision_path not in self._valid_paths:
            self._check_path(decision_path)
        engine = self.engine
        revision = engine.revision
        counts = self._counts
        counts["decisions"] += 1
        key: CacheKey | None = None
        if self.cache.enabled:
            try:
                key = (decision_path, revision, self._digest(revision, input_doc))
            except (TypeError, ValueError):  # not JSON-able: decide without the cache
                key = None
            hit = self.cache.get(key) if key is not None else None
            if hit is not None:  # stored with cached=True: no copy on the way out
                counts["cache_hits"] += 1
                self._m_hit.inc()
                (self._m_allow if hit.allowed else self._m_deny).inc()
                return hit
            counts["cache_misses"] += 1
            self._m_miss.inc()
        if self.breaker is not None and not self.breaker.allow():
            self._fail(
                CIRCUIT_OPEN,
                "circuit open: OPA not asked during the cool-down",
                decision_path,
                count_breaker=False,
            )
        started = time.perf_counter()
        try:
            raw = await engine.evaluate(decision_path, input_doc)
        except EngineError as exc:
            if exc.reason in INPUT_REFUSALS:  # this input's fault: not an engine failure
                if self.breaker is not None:
                    self.breaker.abandon()
                self._fail(exc.reason, exc.detail, decision_path, count_breaker=False)
            self._fail(exc.reason, exc.detail, decision_path)
        except asyncio.CancelledError:
            if self.breaker is not None:
                self.breaker.abandon()
            raise
        finally:
            self._m_seconds.observe(time.perf_counter() - started)
        if self.breaker is not None:
            if raw.http_status is not None:
                self._breaker_failure()
            else:
                self.breaker.success()
                self._metrics.policy_breaker_open.set(0)
        decision: Decision
        problem: str | None
        memo = self._parsed.get(raw.text) if raw.text else None
        if memo is not None and memo.policy_revision == revision:
            decision, problem = memo, None
        else:
            decision, problem = parse_result(raw, revision, engine.engine_name)
            if problem is None and raw.text:
                if len(self._parsed) >= 1024:
                    self._parsed.clear()
                self._parsed[raw.text] = decision
        if problem is not None:
            counts["invalid"] += 1
            self._metrics.policy_decisions.labels(engine.name, "invalid").inc()
            log.warning(
                "policy_result_invalid",
                engine=engine.name,
                decision_path=decision_path,
                problem=problem,
                revision=revision,
            )
            return decision
        (self._m_allow if decision.reason == ALLOW else self._m_deny).inc()
        if key is not None:
            self.cache.put(key, decision)
        return decision

    def readiness(self) -> Mapping[str, bool]:
        breaker_ok = self.breaker is None or self.breaker.state != OPEN
        return {"policy_loaded": self.engine.loaded, "policy_breaker_closed": breaker_ok}

    def stats(self) -> Mapping[str, float]:
        out = {f"policy_{k}": float(v) for k, v in self._counts.items()}
        out["policy_cache_entries"] = float(len(self.cache))
        out["policy_breaker_open"] = float(self.breaker is not None and self.breaker.state == OPEN)
        return out

    async def reload(self) -> bool:
        ok = await self.engine.reload()
        self._counts["reloads_ok" if ok else "reloads_failed"] += 1
        self._metrics.policy_reloads.labels("ok" if ok else "failed").inc()
        if not ok:
            self._metrics.policy_reload_failures.inc()
        if ok:
            self.cache.clear()
        return ok

    async def start(self) -> None:
        try:
            await self.engine.start()
        except Exception as exc:  # noqa: BLE001 - one line, never a traceback
            message = (
                str(exc)
                if isinstance(exc, LoadError)
                else f"policy load failed ({type(exc).__name__})"
            )
            log.error("policy_load_failed", engine=self.engine.name, error=message)
            raise ConfigError([f"policy.policy_dirs: policy does not load: {message}"]) from None
        if self._watch_interval is not None and self._watch_task is None:
            self._watch_task = asyncio.create_task(self._watch(), name="policy-watch")
            self._watch_task.add_done_callback(_report_watch_end)

    async def close(self) -> None:
        task, self._watch_task = self._watch_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self.engine.close()

    # -- internals -----------------------------------------------------------------
    def _digest(self, revision: str, input_doc: Mapping[str, Any]) -> str | bytes:
        """The input part of the cache key. When every read of `input` in the loaded
        modules is a static path (regorus's AST, `checks.Facts.input_reads`), the value
        at each of those paths (or where the path stops: a missing key, or the
        non-object met on the way, whole): the decision is a function of exactly these.
        Otherwise the whole input's digest, without request id and time only when the
        policy cannot read them. The engine always gets the whole input."""
        plan = self._key_plan
        if plan is None or plan[0] != revision:
            facts = getattr(self.engine, "facts", None)
            if facts is None or () in facts.input_reads:
                reads = None
                free = (
                    facts is not None
                    and not facts.reads(("request", "id"))
                    and not facts.reads(("request", "time"))
                )
            else:
                reads = _minimal(facts.input_reads)
                free = False
            plan = self._key_plan = (revision, reads, free)
        reads = plan[1]
        if reads is not None:
            return read_key(input_doc, reads)
        return stable_sha256(input_doc) if plan[2] else full_sha256(input_doc)

    def _check_path(self, decision_path: str) -> None:
        problem = check_decision_path(decision_path)
        if problem:
            self._counts["errors"] += 1
            raise ServiceUnavailable(ENGINE_ERROR, f"decision path: {problem}")
        if len(self._valid_paths) < 1024:  # routes are few; never grow without bound
            self._valid_paths.add(decision_path)

    def _breaker_failure(self) -> None:
        assert self.breaker is not None
        if self.breaker.failure():
            self._metrics.policy_breaker_open.set(1)
            log.warning(
                "policy_circuit_opened",
                engine=self.engine.name,
                opened_count=self.breaker.opened_count,
            )

    def _fail(
        self, reason: str, detail: str, decision_path: str, *, count_breaker: bool = True
    ) -> None:
        if count_breaker and self.breaker is not None:
            self._breaker_failure()
        self._counts["errors"] += 1
        self._metrics.policy_errors.labels(self.engine.name, reason).inc()
        self._metrics.policy_decisions.labels(self.engine.name, "error").inc()
        log.warning(
            "policy_engine_failed",
            engine=self.engine.name,
            reason=reason,
            detail=detail,
            decision_path=decision_path,
        )
        raise ServiceUnavailable(reason, detail)

    async def _watch(self) -> None:
        """Polls for file changes. Survives anything a file can do to a load: a failed
        reload keeps the old policy (counted as a failed reload; readiness unchanged)
        and the next change is tried again."""
        assert self._watch_interval is not None
        while True:
            await asyncio.sleep(self._watch_interval)
            try:
                changed = await asyncio.to_thread(self.engine.changed_on_disk)
                if changed:
                    log.info("policy_files_changed", engine=self.engine.name)
                    await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive any file
                self._counts["reloads_failed"] += 1
                self._metrics.policy_reloads.labels("failed").inc()
                self._metrics.policy_reload_failures.inc()
                log.error("policy_watch_failed", engine=self.engine.name, error=type(exc).__name__)


def _minimal(paths: Iterable[tuple[str, ...]]) -> tuple[tuple[str, ...], ...]:
    """The read paths without those below another (a subtree read covers them)."""
    out: list[tuple[str, ...]] = []
    for path in sorted(set(paths), key=lambda p: (len(p), p)):
        if not any(path[: len(done)] == done for done in out):
            out.append(path)
    return tuple(sorted(out))


def read_key(doc: Mapping[str, Any], reads: Sequence[tuple[str, ...]]) -> bytes:
    """Canonical bytes of what `reads` can see of `doc`: per path, how deep the walk
    went, whether it found a value, and that value (the one at the path, or the
    non-object met on the way, whole)."""
    parts: list[Any] = []
    for path in reads:
        node: Any = doc
        depth = 0
        found = True
        for segment in path:
            if not isinstance(node, Mapping):
                break
            if segment not in node:
                node, found = None, False
                break
            node = node[segment]
            depth += 1
        parts.append((depth, found, node))
    try:
        return orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        return canonical_bytes(parts)


def _report_watch_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("policy_watch_stopped", error=type(task.exception()).__name__)
