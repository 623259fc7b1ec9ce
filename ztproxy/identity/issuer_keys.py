"""One issuer's keys over time: TTL cache, rate-limited refresh, bounded staleness.

Takes the issuer's config, a `KeySource` and an injected clock; gives the verifier the
key for a (kid, alg), or raises `ServiceUnavailable("issuer_keys_unavailable")` when the
keys have never loaded or are stale past the window. It trusts the source's document
only after `keyset.build_keyset` has filtered it.

Timeline after a good fetch at `t`:

    t ........ fresh_until ................ fresh_until + stale_window
       fresh      | stale (refresh failing: |   unusable: 503, not ready
                  | last good keys, logged) |

- `fresh_until = t + ttl`, where ttl is the issuer's Cache-Control max-age clamped to
  [jwks_refresh_min_interval_seconds, jwks_cache_ttl_seconds]: the issuer may shorten
  our cache, never lengthen it, and never make us poll faster than the limiter allows.
- Fetches of any cause (start, TTL, unknown kid, background) are single-flight and at
  most one per `jwks_refresh_min_interval_seconds`: a flood of unknown kids costs at
  most one fetch per interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from jwt import PyJWK

from ..config.identity import IssuerConfig
from ..errors import ServiceUnavailable
from ..metrics import Metrics
from .jwks import JwksFetchError, KeySource
from .keyset import KeySet, build_keyset

log = structlog.get_logger(__name__)

UNAVAILABLE = "issuer_keys_unavailable"


class IssuerKeys:
    def __init__(
        self,
        config: IssuerConfig,
        source: KeySource,
        *,
        clock: Callable[[], float],
        metrics: Metrics,
    ) -> None:
        self.config = config
        self._source = source
        self._clock = clock
        self._metrics = metrics
        self._keys: KeySet | None = None
        self._fetched_at: float | None = None
        self._fresh_until = 0.0
        self._last_attempt: float | None = None
        self._inflight: asyncio.Task[bool] | None = None
        self._stale_logged = False
        self._expired_logged = False
        self.fetches = 0
        metrics.jwks_age_seconds.labels(issuer=config.name).set_function(self.age)

    # -- state ---------------------------------------------------------------------
    def age(self) -> float:
        """Seconds since the last good fetch; -1 until the keys have loaded once."""
        return -1.0 if self._fetched_at is None else self._clock() - self._fetched_at

    def ready(self) -> bool:
        return self._keys is not None and self._clock() < self._usable_until()

    def _usable_until(self) -> float:
        return self._fresh_until + self.config.jwks_stale_window_seconds

    def refresh_due(self) -> bool:
        """For the background loop: never loaded, or within the last tenth of the TTL."""
        if self._keys is None:
            return True
        margin = min(60.0, self.config.jwks_cache_ttl_seconds / 10)
        return self._clock() >= self._fresh_until - margin

    # -- fetching ------------------------------------------------------------------
    async def refresh(self) -> bool:
        """Fetch now unless a fetch ran within the min interval; join one in flight.
        Returns True when this call saw a successful fetch."""
        if self._inflight is not None:
            return await asyncio.shield(self._inflight)
        now = self._clock()
        interval = self.config.jwks_refresh_min_interval_seconds
        if self._last_attempt is not None and now - self._last_attempt < interval:
            return False
        self._last_attempt = now
        task = asyncio.create_task(self._fetch_once(), name=f"jwks-fetch:{self.config.name}")
        self._inflight = task
        task.add_done_callback(self._clear_inflight)
        return await asyncio.shield(task)

    def _clear_inflight(self, task: asyncio.Task[bool]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _fetch_once(self) -> bool:
        name = self.config.name
        self.fetches += 1
        try:
            fetched = await self._source.fetch()
            keyset = build_keyset(fetched.document, self.config.algorithms)
        except JwksFetchError as exc:
            return self._failed(exc.reason)
        except ValueError:
            return self._failed("not_jwks")
        now = self._clock()
        ttl = self.config.jwks_cache_ttl_seconds
        if fetched.max_age is not None:
            ttl = max(self.config.jwks_refresh_min_interval_seconds, min(ttl, fetched.max_age))
        recovered = self._stale_logged or self._expired_logged
        self._keys, self._fetched_at, self._fresh_until = keyset, now, now + ttl
        self._stale_logged = self._expired_logged = False
        self._metrics.jwks_fetches.labels(issuer=name, result="ok").inc()
        if not keyset:
            log.warning("jwks_no_usable_keys", issuer=name, skipped=keyset.skipped)
        log.info(
            "jwks_recovered" if recovered else "jwks_loaded",
            issuer=name,
            keys=len(keyset),
            skipped=keyset.skipped,
            ttl_seconds=ttl,
        )
        return True

    def _failed(self, reason: str) -> bool:
        self._metrics.jwks_fetches.labels(issuer=self.config.name, result="error").inc()
        log.warning(
            "jwks_fetch_failed",
            issuer=self.config.name,
            reason=reason,
            have_keys=self._keys is not None,
        )
        return False

    # -- use -----------------------------------------------------------------------
    async def keyset(self) -> KeySet:
        """The keys to verify with now; refreshes first when the TTL has passed."""
        if self._keys is None or self._clock() >= self._fresh_until:
            await self.refresh()
        keys = self._keys
        now = self._clock()
        if keys is None:
            raise ServiceUnavailable(UNAVAILABLE, f"issuer {self.config.name}: never loaded")
        if now >= self._usable_until():
            if not self._expired_logged:
                self._expired_logged = True
                log.error(
                    "jwks_stale_window_passed", issuer=self.config.name, age_seconds=int(self.age())
                )
            raise ServiceUnavailable(UNAVAILABLE, f"issuer {self.config.name}: keys stale")
        if now >= self._fresh_until and not self._stale_logged:
            self._stale_logged = True
            log.warning(
                "jwks_using_stale_keys",
                issuer=self.config.name,
                age_seconds=int(self.age()),
                until_seconds=int(self._usable_until() - now),
            )
        return keys

    async def find(self, kid: str, alg: str) -> tuple[PyJWK | None, bool, str]:
        """(key, kid_known, the key's JWK thumbprint), all from ONE key set. An unknown
        kid triggers one rate-limited refetch."""
        keys = await self.keyset()
        key = keys.find(kid, alg)
        if key is None and kid not in keys.kids and await self.refresh():
            keys = await self.keyset()
            key = keys.find(kid, alg)
        return key, kid in keys.kids, keys.thumbprint(kid, alg) or ""

    def still_has(self, kid: str, alg: str, thumbprint: str) -> bool:
        """For cache hits: the very key that verified the token (same kid, alg AND
        thumbprint) is still published, and the keys are usable."""
        keys = self._keys
        return (
            keys is not None
            and bool(thumbprint)
            and keys.thumbprint(kid, alg) == thumbprint
            and self._clock() < self._fresh_until
        )

    # -- lifecycle -----------------------------------------------------------------
    async def run_background(self, poll_seconds: float) -> None:
        """Keep the keys fresh (and retry never-loaded issuers) without a request."""
        while True:
            await asyncio.sleep(poll_seconds)
            if self.refresh_due():
                await self.refresh()

    async def close(self) -> None:
        task = self._inflight
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
