"""Decision cache: recent decisions by (decision path, policy revision, input digest).

Takes successful decisions only (allow, or a policy's well-formed deny); errors and
invalid results are never stored. The key is the decision path, the revision and what
the decider derives from the input (`decider._digest`): the values at the static input
paths the policy reads (from regorus's AST), or, when any read is not a static path,
the SHA-256 of the whole canonical input (request id and time left out only when the
policy cannot read them). An entry never answers a request differing in anything the
policy can read.
Bounded in size (least recently used goes first) and in age (TTL on an injected
monotonic clock). `clear()` on every policy reload.

A hit is a dict lookup and an expiry check: the entry holds the decision already
marked `cached=True`, built once when it is stored.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from ..model import Decision
from .prepared import stable_sha256

CacheKey = tuple[str, str, str | bytes]  # path, revision, input digest or cut-down bytes


def cache_key(decision_path: str, revision: str, input_doc: Mapping[str, Any]) -> CacheKey:
    return (decision_path, revision, stable_sha256(input_doc))


class DecisionCache:
    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float]) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._clock = clock
        self.enabled = ttl_s > 0
        self._entries: OrderedDict[Hashable, tuple[float, Decision]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Decision | None:
        """The stored decision (with `cached=True`), or None."""
        item = self._entries.get(key)
        if item is None:
            return None
        if self._clock() >= item[0]:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return item[1]

    def put(self, key: Hashable, decision: Decision) -> None:
        if not self.enabled:
            return
        cached = decision if decision.cached else dataclasses.replace(decision, cached=True)
        self._entries[key] = (self._clock() + self._ttl, cached)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
