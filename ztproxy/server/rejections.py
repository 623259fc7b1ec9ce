"""Rejected TLS handshakes, aggregated per source address and reason.

Every failed TCP/TLS connect used to write a signed audit record and a log line: one
unauthenticated client made 11,273 records in 5 s. Now the first rejection of a
(source address, reason) pair in an interval is reported at once, as before; the
repeats in that interval are counted and reported as ONE record when the interval
ends, with the count in `policy_reasons: ["count=<n>"]`.
Memory is bounded: at most `max_keys` pairs are tracked per interval; beyond that,
rejections are counted per reason under the source address "*".

Stands between the acceptor and the pipeline's `record_tls_rejected`, which it calls
with the acceptor's four arguments, and with a fifth, the count, for an aggregate.
Called on the event loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

Sink = Callable[..., None]  # (address, reason, cert sha256, SPIFFE ID[, count])

INTERVAL_SECONDS = 10.0
MAX_KEYS = 1024
_MIXED = "\0mixed"


@dataclass(slots=True)
class _Repeats:
    count: int = 0
    cert_sha256: str | None = None
    spiffe_id: str | None = None


class RejectAggregator:
    def __init__(
        self, sink: Sink, *, interval: float = INTERVAL_SECONDS, max_keys: int = MAX_KEYS
    ) -> None:
        self._sink = sink
        self._interval = interval
        self._max_keys = max_keys
        self._seen: dict[tuple[str, str], _Repeats] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __call__(
        self, address: str, reason: str, cert_sha256: str | None, spiffe_id: str | None
    ) -> None:
        key = (address, reason)
        repeats = self._seen.get(key)
        if repeats is None:
            if len(self._seen) >= self._max_keys:
                key = ("*", reason)
                repeats = self._seen.get(key)
            if repeats is None:
                self._seen[key] = _Repeats(cert_sha256=cert_sha256, spiffe_id=spiffe_id)
                if self._timer is None:
                    self._timer = asyncio.get_running_loop().call_later(self._interval, self.flush)
                if key[0] != "*":
                    self._sink(address, reason, cert_sha256, spiffe_id)
                    return
                repeats = self._seen[key]
        repeats.count += 1
        if repeats.cert_sha256 != cert_sha256:
            repeats.cert_sha256 = _MIXED
        if repeats.spiffe_id != spiffe_id:
            repeats.spiffe_id = _MIXED

    def flush(self) -> None:
        """Report the repeats counted so far (one record per pair) and start afresh."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        seen, self._seen = self._seen, {}
        for (address, reason), repeats in seen.items():
            if repeats.count:
                self._sink(
                    address,
                    reason,
                    None if repeats.cert_sha256 == _MIXED else repeats.cert_sha256,
                    None if repeats.spiffe_id == _MIXED else repeats.spiffe_id,
                    repeats.count,
                )

    def tracked(self) -> int:
        return len(self._seen)
