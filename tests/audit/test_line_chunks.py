"""LineChunks (what verify and recovery read segments with) hands out exactly the file's
whole lines, in order, and keeps what follows the last newline as `torn`, for every
block size and every place a line may straddle blocks (a line across many blocks is
gathered in place: reading a huge planted line stays linear, not quadratic)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ztproxy.audit.segment import LineChunks


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=12),
    torn=st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
    size=st.integers(1, 17),
)
def test_whole_lines_in_order_for_every_block_size(
    tmp_path_factory,
    lines: list[bytes],  # type: ignore[no-untyped-def]
    torn: bytes,
    size: int,
) -> None:
    path = Path(tmp_path_factory.mktemp("lc")) / "w0-000001.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines) + torn)
    chunks = LineChunks(path, size)
    got = b"".join(data[begin:stop] for data, begin, stop in chunks)
    assert got.split(b"\n")[:-1] == lines
    assert chunks.torn == torn


def test_a_line_across_many_blocks_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "w0-000001.jsonl"
    big = b"x" * 5000
    path.write_bytes(b"a\n" + big + b"\nb\n")
    pieces = [data[begin:stop] for data, begin, stop in LineChunks(path, 7)]
    assert b"".join(pieces).split(b"\n")[:-1] == [b"a", big, b"b"]
