"""Stage 6 (admission): each caller's share of the upstream pool, each route's limit.

One slow workload used to fill the shared upstream pool (slow request bodies hold
their connections) and every other workload got 504. Before an allowed request is
forwarded it takes a slot for its caller (SPIFFE ID) and for its route, and gives them
back when the response is done:

- a caller already holding `limits.max_concurrent_per_caller` requests -> 429
  `caller_busy` (its own doing: the others keep their share of the pool);
- a route already holding `routes[].max_concurrent` (when set) -> 503 `route_busy`.

Never waits: a refusal is immediate, so a full share cannot queue up either. Counters
exist only for callers and routes with requests in flight (bounded by them).
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ServiceUnavailable, TooManyRequests
from ..model import Route


class ConcurrencyLimits:
    def __init__(self) -> None:
        self.callers: dict[str, int] = {}
        self.routes: dict[str, int] = {}

    def acquire(self, caller: str, route: Route, per_caller: int) -> Callable[[], None]:
        """Take a slot for `caller` and `route`, or raise; returns the release."""
        held = self.callers.get(caller, 0)
        if held >= per_caller:
            raise TooManyRequests("caller_busy")
        on_route = self.routes.get(route.name, 0)
        if route.max_concurrent and on_route >= route.max_concurrent:
            raise ServiceUnavailable("route_busy")
        self.callers[caller] = held + 1
        self.routes[route.name] = on_route + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            _down(self.callers, caller)
            _down(self.routes, route.name)

        return release


def _down(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 1) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
