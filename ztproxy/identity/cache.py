"""The verified-token cache: skips signature checks for a token seen before.

Takes a key built from the token kind, the client certificate's RFC 8705 thumbprint and
the SHA-256 of the token (never the token itself), and stores the `Principal` made from
it. Trusts only what the verifier produced. Bounded in entries (least recently used
goes first) and in time: an entry is dropped at the token's `exp` (no leeway), so a
cached token never outlives its own expiry. The authenticator also drops a hit whose
verifying key (kid, alg and JWK thumbprint: a new key under an old kid is another key)
is no longer published or whose issuer's keys are not fresh, so removing a key
from the JWKS revokes cached tokens once the JWKS TTL has passed.

Route-dependent checks (certificate binding) run on every request, hit or miss.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..model import Principal

CacheKey = tuple[str, str, bytes]  # (kind, client cert x5t#S256, sha256(token))


@dataclass(frozen=True, slots=True)
class CacheEntry:
    principal: Principal
    issuer_name: str
    kid: str
    alg: str = ""
    key_thumbprint: str = ""  # the verifying key's identity; a hit needs it still published


class TokenCache:
    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[CacheKey, CacheEntry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(
        self, key: CacheKey, still_valid: Callable[[CacheEntry], bool] = lambda _: True
    ) -> CacheEntry | None:
        """The entry for `key` unless absent, expired, or `still_valid` says no."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if self._clock() >= entry.principal.expires_at or not still_valid(entry):
            del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: CacheKey, entry: CacheEntry) -> None:
        if self._max <= 0 or self._clock() >= entry.principal.expires_at:
            return
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
