"""Circuit breaker in front of the remote OPA.

Takes success / failure reports and an injected monotonic clock; answers whether a
call may go out. After `failures` consecutive failures it opens: no call goes out for
`cooldown_s` and the decider denies (503 `policy_circuit_open`). After the cool-down
one probe call is let through (half-open): success closes it, failure opens it again
for another cool-down. Single-threaded (the event loop); no locks needed.
"""

from __future__ import annotations

from collections.abc import Callable

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class Breaker:
    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float]) -> None:
        self._threshold = failures
        self._cooldown = cooldown_s
        self._clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probing = False
        self.opened_count = 0

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return CLOSED
        if self._clock() - self._opened_at >= self._cooldown:
            return HALF_OPEN
        return OPEN

    def allow(self) -> bool:
        """May a call go out now? In half-open state only one probe at a time."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        self._consecutive = 0
        self._opened_at = None
        self._probing = False

    def abandon(self) -> None:
        """A call went out but was cancelled before it answered: let another probe go."""
        self._probing = False

    def failure(self) -> bool:
        """Record a failure; True when this failure opened (or re-opened) the circuit."""
        self._consecutive += 1
        was_probe = self._probing
        self._probing = False
        if was_probe or (self._opened_at is None and self._consecutive >= self._threshold):
            self._opened_at = self._clock()
            self.opened_count += 1
            return True
        return False
