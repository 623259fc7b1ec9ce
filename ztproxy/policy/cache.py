"""Decision cache: recent decisions by (decision path, policy revision, input digest).

Takes successful decisions only (allow, or a policy's well-formed deny); errors and
invalid results are never stored. The key is SHA-256 over the canonical input without
request id and time, plus the path and the revision, so an entry never answers a
request differing in method, path, query, headers, user, device, source or
destination. Bounded in size (least recently used goes first) and in age (TTL on an
injected monotonic clock). `clear()` on every policy reload.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from ..model import Decision
from .canonical import canonical_bytes, stable_view


def cache_key(decision_path: str, revision: str, input_doc: Mapping[str, Any]) -> str:
    h = hashlib.sha256()
    for part in (decision_path.encode(), revision.encode()):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    h.update(canonical_bytes(stable_view(input_doc)))
    return h.hexdigest()


class DecisionCache:
    def __init__(self, ttl_s: float, max_entries: int,
                 clock: Callable[[], float]) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Decision]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._ttl > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Decision | None:
        if not self.enabled:
            return None
        item = self._entries.get(key)
        if item is None:
            return None
        expires, decision = item
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return decision

    def put(self, key: str, decision: Decision) -> None:
        if not self.enabled:
            return
        self._entries[key] = (self._clock() + self._ttl, decision)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
