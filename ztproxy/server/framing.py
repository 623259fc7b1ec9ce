"""A guard on chunk extensions, following the request framing of one connection.

aiohttp's C parser (llhttp) skips chunk extensions without a limit: a 64 KiB
extension went through. This follows the same bytes in step with the parser's
messages (header end, then Content-Length bytes, or chunked framing) and measures each
chunk-size line; one longer than the limit is reported so the request can be refused
(400 `chunk_extension_too_long`). It refuses nothing else: when it cannot follow the
framing (a parser error, an upgrade, a message it did not see coming), it stops
watching that connection and leaves the parser to judge.

Request framing here is strict, as llhttp's request parser is: lines end in CRLF,
empty lines before a request line are skipped.
"""

from __future__ import annotations

from collections import deque
from typing import Any

_HEAD, _LENGTH, _SIZE, _DATA, _DATA_CRLF, _TRAILER, _OFF = range(7)
_HEX = frozenset(b"0123456789abcdefABCDEF")

CHUNKED = -1
UPGRADE = -2


class ChunkExtensionGuard:
    """`message(framing, payload)` for each message the parser emitted (framing: a
    Content-Length, 0 for none, CHUNKED or UPGRADE), then `feed(data)` with the bytes
    the parser was given; `feed` returns the payload of a request whose chunk-size line
    is too long, else None."""

    __slots__ = (
        "_line_limit",
        "_state",
        "_tail",
        "_started",
        "_remaining",
        "_line",
        "_size",
        "_pending",
        "_payload",
    )

    def __init__(self, max_extension_bytes: int) -> None:
        self._line_limit = max_extension_bytes + 32  # hex size, ";", spaces
        self._state = _HEAD
        self._tail = b""
        self._started = False
        self._remaining = 0
        self._line = 0
        self._size = bytearray()
        self._pending: deque[tuple[int, Any]] = deque()
        self._payload: Any = None

    @property
    def watching(self) -> bool:
        return self._state != _OFF

    def stop(self) -> None:
        self._state = _OFF
        self._pending.clear()
        self._payload = None

    def message(self, framing: int, payload: Any) -> None:
        if self._state != _OFF:
            self._pending.append((framing, payload))

    def feed(self, data: bytes) -> Any:
        pos, end = 0, len(data)
        while pos < end and self._state != _OFF:
            state = self._state
            if state == _HEAD or state == _TRAILER:
                if state == _HEAD and not self._started:
                    while pos < end and data[pos] in (13, 10):
                        pos += 1
                    if pos == end:
                        break
                    self._started = True
                window = self._tail + data[pos:]
                found = window.find(b"\r\n\r\n")
                if found < 0:
                    self._tail = window[-3:]
                    break
                pos += found + 4 - len(self._tail)
                self._tail = b""
                if state == _TRAILER:
                    self._state, self._started = _HEAD, False
                    continue
                if not self._pending:
                    self.stop()  # a header end the parser did not report: not ours
                    break
                framing, self._payload = self._pending.popleft()
                if framing == CHUNKED:
                    self._state, self._line, self._size = _SIZE, 0, bytearray()
                elif framing > 0:
                    self._state, self._remaining = _LENGTH, framing
                elif framing == 0:
                    self._started = False
                else:
                    self.stop()
            elif state == _LENGTH or state == _DATA or state == _DATA_CRLF:
                take = min(self._remaining, end - pos)
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    if state == _LENGTH:
                        self._state, self._started = _HEAD, False
                    elif state == _DATA:
                        self._state, self._remaining = _DATA_CRLF, 2
                    else:
                        self._state, self._line, self._size = _SIZE, 0, bytearray()
            else:  # _SIZE: a chunk-size line, up to its LF
                lf = data.find(b"\n", pos)
                stop = end if lf < 0 else lf
                self._line += stop - pos
                if len(self._size) < 17:
                    self._size += data[pos : min(stop, pos + 17)]
                if self._line > self._line_limit:
                    payload = self._payload
                    self.stop()
                    return payload
                if lf < 0:
                    break
                pos = lf + 1
                digits = bytes(self._size).split(b";")[0].rstrip(b"\r \t")
                if not digits or len(digits) > 16 or not set(digits) <= _HEX:
                    self.stop()  # the parser refuses this itself
                    break
                size = int(digits, 16)
                if size == 0:
                    self._state, self._tail = _TRAILER, b"\r\n"
                else:
                    self._state, self._remaining = _DATA, size
        if self._pending:
            # the parser saw a header end that these bytes did not show: not in step
            self.stop()
        return None
