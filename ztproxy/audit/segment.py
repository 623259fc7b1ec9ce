"""Audit files on disk: names, discovery, reading lines back, appending safely.

Layout of an audit directory (each worker process has its own chain):

    w<N>-<000001>.jsonl        segments of worker N's chain, one record per line
    w<N>-checkpoints.jsonl     worker N's signed checkpoints, one JSON object a line
    w<N>.lock                  held (flock) by the live writer of worker N
    w<N>.seal                  the writer's signed word on its last write (recovery.py)
    quarantine/                what a restart set aside, never deleted (recovery.py)

Takes a directory; returns file lists and lines. Reading trusts nothing: a last
line without its newline is returned apart as a torn fragment (a write cut short by
a crash), never as a record.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SEGMENT_RE = re.compile(r"^w(\d{1,6})-(\d{6,9})\.jsonl$")
CHECKPOINTS_RE = re.compile(r"^w(\d{1,6})-checkpoints\.jsonl$")


def segment_name(worker: int, number: int) -> str:
    return f"w{worker}-{number:06d}.jsonl"


def checkpoints_name(worker: int) -> str:
    return f"w{worker}-checkpoints.jsonl"


def seal_name(worker: int) -> str:
    return f"w{worker}.seal"


def lock_name(worker: int) -> str:
    return f"w{worker}.lock"


def segment_number(path: Path) -> int:
    match = SEGMENT_RE.match(path.name)
    if match is None:
        raise ValueError(f"not a segment file name: {path.name}")
    return int(match.group(2))


@dataclass(frozen=True, slots=True)
class ChainFiles:
    worker: int
    segments: tuple[Path, ...]
    checkpoints: Path | None


@dataclass
class _Found:
    segments: list[tuple[int, Path]] = field(default_factory=list)
    checkpoints: Path | None = None


def discover(directory: str | os.PathLike[str]) -> dict[int, ChainFiles]:
    """Every worker chain in `directory`, segments in number order. Only the names
    the writer gives (segment_name, checkpoints_name) count; other spellings of the
    same numbers are not the chain's files."""
    found: dict[int, _Found] = {}
    for entry in sorted(Path(directory).iterdir()):
        seg = SEGMENT_RE.match(entry.name)
        cps = CHECKPOINTS_RE.match(entry.name)
        # One spelling per file: `w00-...` or `w0-0000001.jsonl` would alias worker 0's
        # files (a planted `w00-checkpoints.jsonl` replaced the real one for verify).
        if (
            seg
            and entry.name != segment_name(int(seg.group(1)), int(seg.group(2)))
            or cps
            and entry.name != checkpoints_name(int(cps.group(1)))
        ):
            continue
        if seg:
            found.setdefault(int(seg.group(1)), _Found()).segments.append(
                (int(seg.group(2)), entry)
            )
        elif cps:
            found.setdefault(int(cps.group(1)), _Found()).checkpoints = entry
    return {
        worker: ChainFiles(worker, tuple(p for _, p in sorted(f.segments)), f.checkpoints)
        for worker, f in sorted(found.items())
    }


@dataclass(frozen=True, slots=True)
class Lines:
    """The complete lines of a file (without newlines) and a torn last fragment."""

    lines: list[bytes]
    torn: bytes


def split_lines(data: bytes) -> Lines:
    lines = data.split(b"\n")
    torn = lines.pop()
    return Lines(lines, torn)


def read_lines(path: Path) -> Lines:
    return split_lines(path.read_bytes())


CHUNK_BYTES = 1 << 20


class LineChunks:
    """The complete lines of a file, chunk by chunk, as (data, begin, stop): the
    bytes data[begin:stop] are whole lines, each ending with a newline. After
    iterating, `torn` holds what followed the last newline.

    Reading a segment in blocks of about `size` bytes keeps the memory a verifier
    touches small and reused (a 64 MiB segment read whole costs more in fresh pages
    than in hashing), and handing out bounds instead of slices copies nothing but
    the one line that straddles two blocks."""

    __slots__ = ("path", "size", "begin", "end", "torn")

    def __init__(
        self, path: Path, size: int = CHUNK_BYTES, *, begin: int = 0, end: int | None = None
    ) -> None:
        self.path = path
        self.size = size
        self.begin = begin  # read the byte range [begin, end) of the file only
        self.end = end
        self.torn = b""

    def __iter__(self) -> Iterator[tuple[bytes, int, int]]:
        rest = bytearray()  # a line across blocks grows in place: linear, however long
        with self.path.open("rb", buffering=0) as fh:
            fh.seek(self.begin)
            left = -1 if self.end is None else self.end - self.begin
            while left and (block := fh.read(self.size if left < 0 else min(self.size, left))):
                left -= len(block) if left > 0 else 0
                begin = 0
                if rest:
                    newline = block.find(b"\n")
                    if newline < 0:
                        rest += block
                        continue
                    rest += block[: newline + 1]
                    line = bytes(rest)
                    yield line, 0, len(line)
                    begin = newline + 1
                cut = max(block.rfind(b"\n", begin) + 1, begin)
                if cut > begin:
                    yield block, begin, cut
                rest = bytearray(block[cut:])
        self.torn = bytes(rest)


class AppendFile:
    """An append-only file written with os.write (no user-space buffer: what was
    handed to the kernel survives the process being killed)."""

    __slots__ = ("path", "size", "opened_at", "_fd")

    def __init__(self, path: Path, opened_at: float, *, exclusive: bool = True) -> None:
        flags = (
            os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | (os.O_EXCL if exclusive else 0)
        )  # a planted symlink is never written through
        self._fd: int | None = os.open(path, flags, 0o640)
        self.path = path
        self.size = os.fstat(self._fd).st_size
        self.opened_at = opened_at

    def write(self, data: bytes) -> None:
        """Write all of `data`; on OSError `self.size` tells how much got through."""
        if self._fd is None:
            raise OSError(9, "file is closed")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            self.size += written
            view = view[written:]

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Make a new file's directory entry durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
