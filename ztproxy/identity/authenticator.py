"""Stage 3 of the pipeline: who is behind the request (user) and on what (device).

Takes the request headers, raw query, matched route and the verified client certificate
(`PeerIdentity`, from the TLS stage: trusted). Returns `Credentials(user, device)`, each
a `Principal` or None; raises `Unauthenticated(reason)` (401) or
`ServiceUnavailable("issuer_keys_unavailable")` (503). Implements `seams.Authenticator`.

Per route and per kind: `none` never looks at the header (the proxy strips it anyway);
`optional` returns None when absent but refuses a token that is sent and invalid;
`required` refuses an absent one. A token in the query string is refused first, on every
route. The order for one token: cache (keyed by kind, client-cert thumbprint and the
token's SHA-256) or full verification, then the certificate binding of this route.

In front of that, the answer for the whole request is remembered too (`_Pair`): the
Credentials for one route, one client certificate and the SHA-256 of exactly these
credential header values (never the values themselves). It is what the per-token path
would compute again, so it is answered only under the same conditions as a token-cache
hit: before the earliest `exp` of its tokens (no leeway), for the same route object
(a reload makes new ones), and while every token's `kid` is still published by fresh
keys. A request with a repeated credential header, or anything refused, takes the
per-token path (and is never remembered). Bounded by `identity.token_cache_size`.

Owns its aiohttp ClientSession (JWKS only, 2 s total timeout) and one named background
task per issuer that keeps keys fresh and retries issuers that were down at start.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

import aiohttp
from multidict import CIMultiDictProxy

from ..config.identity import IdentityConfig, IssuerConfig
from ..errors import Rejection, Unauthenticated
from ..metrics import LoopValue, Metrics
from ..model import Credentials, PeerIdentity, Principal, Requirement, Route
from .binding import check_binding
from .cache import CacheEntry, CacheKey, TokenCache
from .carriers import bearer_token, check_query
from .issuer_keys import IssuerKeys
from .jwks import JWKS_TIMEOUT_SECONDS, FileKeySource, HttpKeySource, InlineKeySource, KeySource
from .verifier import TokenVerifier


class _Pair(NamedTuple):
    """The Credentials of one request shape (see the module docstring)."""

    route: Route
    creds: Credentials
    expires_at: float
    entries: tuple[tuple[str, CacheEntry], ...]  # (kind, token cache entry) per token


class TokenAuthenticator:
    def __init__(
        self,
        config: IdentityConfig,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        refresh_poll_seconds: float = 5.0,
    ) -> None:
        self._config = config
        self._metrics = metrics if metrics is not None else Metrics()
        self._clock = clock
        self._poll = refresh_poll_seconds
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._http_sources: list[tuple[HttpKeySource, IssuerConfig]] = []
        self._issuers: dict[str, IssuerKeys] = {
            issuer.name: IssuerKeys(
                issuer, self._source(issuer), clock=clock, metrics=self._metrics
            )
            for issuer in config.issuers
        }
        self._verifier = TokenVerifier(self._issuers.values(), clock)
        self._cache = TokenCache(config.token_cache_size, clock)
        self._header_names = frozenset({"authorization", "cookie", config.device_header})
        # label children resolved once: labels() costs more than the cache hit itself
        self._cache_hit = self._metrics.token_cache.labels(result="hit")
        self._cache_miss = self._metrics.token_cache.labels(result="miss")
        self._results: dict[tuple[str, str], LoopValue] = {}
        self._pairs: dict[tuple[str, str, bytes], _Pair] = {}
        self._pairs_max = config.token_cache_size
        self._device_header = config.device_header

    def _source(self, issuer: IssuerConfig) -> KeySource:
        if issuer.jwks_uri is not None:
            source = HttpKeySource(issuer.jwks_uri, self._client)
            self._http_sources.append((source, issuer))
            return source
        if issuer.jwks_file is not None:
            return FileKeySource(issuer.jwks_file)
        return InlineKeySource(issuer.jwks or {"keys": []})

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            raise RuntimeError("TokenAuthenticator.start() was not awaited")
        return self._session

    # -- seams.Authenticator -------------------------------------------------------
    def credential_header_names(self) -> frozenset[str]:
        return self._header_names

    async def authenticate(
        self, headers: CIMultiDictProxy[str], raw_query: str, route: Route, peer: PeerIdentity
    ) -> Credentials:
        check_query(raw_query)
        key = self._pair_key(headers, route, peer) if self._pairs_max > 0 else None
        if key is not None:
            pair = self._pairs.get(key)
            if pair is not None:
                if (
                    pair.route is route
                    and self._clock() < pair.expires_at
                    and all(self._still_published(entry) for _, entry in pair.entries)
                ):
                    for kind, _ in pair.entries:
                        self._cache.hits += 1
                        self._cache_hit.inc()
                        self._count(kind, "ok")
                    return pair.creds
                del self._pairs[key]
        user, user_entry = await self._credential(
            headers, "authorization", "user", route.user, route, peer
        )
        device, device_entry = await self._credential(
            headers, self._device_header, "device", route.device, route, peer
        )
        creds = Credentials(user=user, device=device)
        if key is not None:
            self._remember(key, route, creds, (("user", user_entry), ("device", device_entry)))
        return creds

    def _pair_key(
        self, headers: CIMultiDictProxy[str], route: Route, peer: PeerIdentity
    ) -> tuple[str, str, bytes] | None:
        values = []
        for name in ("authorization", self._device_header):
            found = headers.getall(name, ())
            if len(found) > 1:
                return None  # the per-token path refuses it, with the reason
            values.append(found[0].encode("utf-8", "surrogateescape") if found else None)
        digest = hashlib.sha256()
        for value in values:  # length-prefixed: no two header pairs give one input
            digest.update(b"-" if value is None else b"+%d:" % len(value) + value)
        return route.name, peer.x5t_s256, digest.digest()

    def _remember(
        self,
        key: tuple[str, str, bytes],
        route: Route,
        creds: Credentials,
        found: tuple[tuple[str, CacheEntry | None], ...],
    ) -> None:
        entries = tuple((kind, entry) for kind, entry in found if entry is not None)
        expires_at = min((e.principal.expires_at for _, e in entries), default=float("inf"))
        if self._clock() >= expires_at:
            return
        pairs = self._pairs
        if len(pairs) >= self._pairs_max:
            del pairs[next(iter(pairs))]  # the oldest: it comes back on its next miss
        pairs[key] = _Pair(route, creds, expires_at, entries)

    def readiness(self) -> Mapping[str, bool]:
        return {f"jwks:{name}": keys.ready() for name, keys in self._issuers.items()}

    def stats(self) -> Mapping[str, float]:
        out: dict[str, float] = {
            "token_cache_entries": float(len(self._cache)),
            "token_cache_hits": float(self._cache.hits),
            "token_cache_misses": float(self._cache.misses),
            "jwks_fetches": float(sum(k.fetches for k in self._issuers.values())),
        }
        for name, keys in self._issuers.items():
            out[f"jwks_age_seconds:{name}"] = keys.age()
        return out

    async def start(self) -> None:
        if self._session is not None:
            return
        for source, issuer in self._http_sources:
            if issuer.jwks_ca_file is not None:
                source.ssl = await asyncio.to_thread(
                    ssl.create_default_context, cafile=issuer.jwks_ca_file
                )
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=JWKS_TIMEOUT_SECONDS),
            connector=aiohttp.TCPConnector(limit=16),
            trust_env=False,
        )
        # First fetch of every issuer; a failure leaves that issuer not ready (503).
        await asyncio.gather(*(keys.refresh() for keys in self._issuers.values()))
        for name, keys in self._issuers.items():
            self._tasks.append(
                asyncio.create_task(keys.run_background(self._poll), name=f"jwks-refresh:{name}")
            )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await asyncio.gather(*(keys.close() for keys in self._issuers.values()))
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- one credential ------------------------------------------------------------
    async def _credential(
        self,
        headers: CIMultiDictProxy[str],
        header: str,
        kind: str,
        requirement: Requirement,
        route: Route,
        peer: PeerIdentity,
    ) -> tuple[Principal | None, CacheEntry | None]:
        if requirement is Requirement.NONE:
            return None, None
        try:
            token = bearer_token(headers, header)
            if token is None:
                if requirement is Requirement.REQUIRED:
                    raise Unauthenticated("missing_token", f"no {kind} token")
                return None, None
            entry = await self._principal(token, kind, route, peer)
        except Rejection as exc:
            self._count(kind, exc.reason)
            raise
        self._count(kind, "ok")
        return entry.principal, entry

    def _count(self, kind: str, result: str) -> None:
        child = self._results.get((kind, result))
        if child is None:  # reason codes are a fixed set: this dict stays small
            child = self._metrics.token_verifications.labels(kind=kind, result=result)
            self._results[(kind, result)] = child
        child.inc()

    def _still_published(self, entry: CacheEntry) -> bool:
        return self._issuers[entry.issuer_name].still_has(
            entry.kid, entry.alg, entry.key_thumbprint
        )

    async def _principal(
        self, token: str, kind: str, route: Route, peer: PeerIdentity
    ) -> CacheEntry:
        digest = hashlib.sha256(token.encode("ascii")).digest()
        key: CacheKey = (kind, peer.x5t_s256, digest)
        entry = self._cache.get(key, self._still_published)
        (self._cache_hit if entry is not None else self._cache_miss).inc()
        if entry is not None:
            check_binding(entry.principal.claims, kind, route.device_binding, peer.x5t_s256)
            return entry
        verified = await self._verifier.verify(token, kind)
        bound = check_binding(verified.claims, kind, route.device_binding, peer.x5t_s256)
        principal = Principal(
            kind=kind,
            issuer=verified.issuer.issuer,
            subject=verified.subject,
            claims=verified.claims,
            token_sha256=digest.hex(),
            expires_at=verified.expires_at,
            bound_to_client_cert=bound,
            issuer_name=verified.issuer.name,
        )
        entry = CacheEntry(
            principal, verified.issuer.name, verified.kid, verified.alg, verified.key_thumbprint
        )
        self._cache.put(key, entry)
        return entry
