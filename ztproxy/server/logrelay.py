"""Whole log lines from many workers: the supervisor reads each worker's stderr pipe and
writes every complete line to its own stderr in one piece, so a line never carries two
workers' text (`LineRelay`, `write_whole`). Used by `server.workers`."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable

MAX_LINE = 1 << 20  # a worker's line longer than this is cut (and written whole)


class LineRelay:
    """Whole lines out of many byte streams: what each stream (a worker's stderr pipe)
    gives is kept until its newline, and each complete line is handed to `write` in
    one piece, so a line never carries two workers' text whatever its length. A line
    longer than `max_line` is cut there (and ended with a newline)."""

    def __init__(self, write: Callable[[bytes], None], max_line: int = MAX_LINE) -> None:
        self._write = write
        self._max = max_line
        self._partial: dict[int, bytearray] = {}

    def open(self, stream: int) -> None:
        self._partial[stream] = bytearray()

    def __contains__(self, stream: int) -> bool:
        return stream in self._partial

    def streams(self) -> list[int]:
        return list(self._partial)

    def feed(self, stream: int, chunk: bytes) -> None:
        buf = self._partial[stream]
        buf += chunk
        end = buf.rfind(b"\n")
        if end >= 0:
            self._write(bytes(buf[: end + 1]))
            del buf[: end + 1]
        while len(buf) > self._max:
            self._write(bytes(buf[: self._max]) + b"\n")
            del buf[: self._max]

    def close(self, stream: int) -> None:
        """The stream ended: what is left of its last line goes out, newline added."""
        buf = self._partial.pop(stream, None)
        if buf:
            self._write(bytes(buf) + b"\n")


def write_whole(data: bytes) -> None:
    """Write to stderr in as few write(2) calls as the kernel allows, from this one
    process: no other worker's text can land inside a line."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    view = memoryview(data)
    while view:
        try:
            n = os.write(2, view)
        except BlockingIOError:
            time.sleep(0.001)
            continue
        except OSError:
            return  # stderr is gone (a closed pipe): there is nowhere left to say it
        view = view[n:]
