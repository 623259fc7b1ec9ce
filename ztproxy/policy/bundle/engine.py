"""The embedded engine fed by OPA bundles: polls, verifies, activates, persists.

Takes a `BundleConfig`; serves decisions exactly as `EmbeddedEngine` does (the same
regorus interpreter, the same load-time checks), but its policy comes from the last
activated bundle instead of directories. Its `revision` is the bundle's
`policy_revision` (`<manifest revision>@sha256:<bundle SHA-256>`), so every audit
record, /readyz and the decision cache key carry it.

Life cycle: `start()` activates the persisted bundle if there is one (offline start),
or else polls once (bounded by `timeout_seconds`), then starts the poll task; it never
fails the start:
with no bundle ever activated the engine is simply not `loaded` (readiness false,
decisions 503, fail closed). Each poll: GET with If-None-Match; 304 -> nothing; 200 ->
`contents.open_bundle` in a worker thread (archive, manifest, signature, digests,
data, roots), then compile with the load-time checks and the package-roots check on
this (the loop) thread, then ONE assignment swaps the policy in, then the bytes are
persisted. Any refusal: one log line `policy_bundle_refused` with the reason code,
`ztproxy_policy_bundle_failures_total{reason}` + 1, the active policy kept. The poll
interval is uniform in [poll_min_seconds, poll_max_seconds] (jitter, so a fleet does
not poll in step). `reload()` (SIGHUP) polls now.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence

import structlog

from ...config.bundle import BundleConfig
from ...metrics import Metrics
from ..embedded import EmbeddedEngine
from ..loader import Loaded, LoadError, compile_sources, release_parked
from .archive import Limits
from .contents import Contents, check_packages, open_bundle
from .refusal import PERSIST, POLICY, BundleRefused
from .service import BundleClient, persist, read_persisted
from .signing import VerificationKey

log = structlog.get_logger(__name__)

ACTIVATED, NOT_MODIFIED, REFUSED = "activated", "not_modified", "refused"


class BundleEngine(EmbeddedEngine):
    def __init__(
        self,
        config: BundleConfig,
        *,
        decision_paths: Sequence[str] = (),
        metrics: Metrics | None = None,
        now: Callable[[], float] = time.time,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        super().__init__((), (), decision_paths=decision_paths)
        self._config = config
        self._keys = {
            k.key_id: VerificationKey(k.key_id, k.algorithm, k.key, k.scope) for k in config.keys
        }
        self._limits = Limits(
            max_compressed_bytes=config.max_total_bytes,
            max_total_bytes=config.max_total_bytes,
            max_member_bytes=config.size_limit_bytes,
        )
        self._metrics = metrics if metrics is not None else Metrics()
        self._now = now
        self._jitter = jitter
        self._client = BundleClient(config)
        self._etag: str | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self.last_refusal = ""  # reason code of the last refused bundle ("" after success)

    # -- PolicyEngine ----------------------------------------------------------------
    async def start(self) -> None:
        if self._config.persist_dir:
            try:
                persisted = await asyncio.to_thread(read_persisted, self._config.persist_dir)
            except OSError:
                persisted = None
                log.warning("policy_bundle_persisted_unreadable")
            if persisted is not None:
                raw, etag = persisted
                if await self.activate(raw, etag, source="persisted") == ACTIVATED:
                    self._etag = etag
        if not self.loaded:  # nothing persisted: one poll now (bounded by timeout_seconds)
            await self.poll_once()
        if self._poll_task is None:
            self._poll_task = asyncio.create_task(self._poll_loop(), name="policy-bundle-poll")

    async def reload(self) -> bool:
        """SIGHUP: poll now. True while a good policy serves: a bundle server that is
        down or a bad bundle (logged, counted) must not fail the rest of a reload."""
        await self.poll_once()
        return self.loaded

    def changed_on_disk(self) -> bool:
        return False  # the poll task owns change detection

    async def close(self) -> None:
        task, self._poll_task = self._poll_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self._client.close()
        await super().close()

    # -- the bundle service ----------------------------------------------------------
    async def poll_once(self) -> str:
        async with self._lock:
            try:
                fetched = await self._client.fetch(self._etag)
            except BundleRefused as exc:
                self._refuse(exc, "download")
                return REFUSED
            if fetched.not_modified:
                return NOT_MODIFIED
            outcome = await self._activate(fetched.raw, "download")
            if outcome == ACTIVATED:
                self._etag = fetched.etag
                await self._persist(fetched.raw, fetched.etag)
            return outcome

    async def activate(self, raw: bytes, etag: str | None, *, source: str) -> str:
        async with self._lock:
            return await self._activate(raw, source)

    async def _activate(self, raw: bytes, source: str) -> str:
        try:
            contents = await asyncio.to_thread(
                open_bundle,
                raw,
                self._keys,
                limits=self._limits,
                allow_unsigned=self._config.allow_unsigned,
                now=self._now,
            )
            loaded = self._compile(contents)
        except BundleRefused as exc:
            self._refuse(exc, source)
            return REFUSED
        old = self.revision
        self._install(loaded, ())  # the swap: one assignment, requests see old or new
        del loaded
        self.last_error = self.last_refusal = ""
        m = self._metrics
        if old:
            m.policy_bundle_info.remove(old)
        m.policy_bundle_info.labels(contents.policy_revision).set(1)
        m.policy_bundle_activations.inc()
        log.info(
            "policy_bundle_activated",
            source=source,
            revision=contents.manifest.revision,
            policy_revision=contents.policy_revision,
            previous_revision=old,
            signed=contents.signed,
            files=len(contents.sources),
        )
        return ACTIVATED

    def _compile(self, contents: Contents) -> Loaded:
        """On the loop thread (regorus engines are pinned to theirs)."""
        try:
            loaded = compile_sources(
                contents.sources,
                decision_paths=self._decision_paths,
                revision=contents.policy_revision,
            )
        except LoadError as exc:
            raise BundleRefused(POLICY, str(exc)) from None
        try:
            check_packages(contents.manifest, loaded.packages)
        except BundleRefused:
            del loaded
            release_parked()
            raise
        return loaded

    async def _persist(self, raw: bytes, etag: str | None) -> None:
        if not self._config.persist_dir:
            return
        try:
            await asyncio.to_thread(persist, self._config.persist_dir, raw, etag)
        except OSError as exc:  # the bundle stays active; the next restart needs the server
            self._refuse(BundleRefused(PERSIST, f"cannot write ({type(exc).__name__})"), "persist")

    def _refuse(self, exc: BundleRefused, source: str) -> None:
        self.last_error = str(exc)
        self.last_refusal = exc.reason
        self._metrics.policy_bundle_failures.labels(exc.reason).inc()
        log.error(
            "policy_bundle_refused",
            reason=exc.reason,
            detail=exc.detail,
            source=source,
            kept_revision=self.revision,
        )

    async def _poll_loop(self) -> None:
        """Polls until cancelled; survives anything a bundle server can send."""
        while True:
            await asyncio.sleep(
                self._jitter(self._config.poll_min_seconds, self._config.poll_max_seconds)
            )
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the poller must outlive any bundle
                self._metrics.policy_bundle_failures.labels(POLICY).inc()
                log.error("policy_bundle_poll_failed", error=type(exc).__name__)
