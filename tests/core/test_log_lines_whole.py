"""Each log line is written whole (issue 15: two workers' JSON lines were glued together,
2 of 26 lines held two objects). The supervisor reads each worker's stderr pipe and
hands complete lines on one at a time; here the streams are cut and interleaved at
every possible place (hypothesis) and every line must come out whole, in order."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from ztproxy.server.logrelay import LineRelay


def _lines(worker: int, n: int) -> list[bytes]:
    return [
        json.dumps({"worker": worker, "i": i, "pad": "x" * (i * 37 % 300)}).encode() + b"\n"
        for i in range(n)
    ]


@given(
    cuts=st.lists(st.tuples(st.integers(0, 1), st.integers(1, 700)), max_size=200),
    counts=st.tuples(st.integers(0, 12), st.integers(0, 12)),
)
def test_interleaved_chunks_come_out_as_whole_lines(
    cuts: list[tuple[int, int]], counts: tuple[int, int]
) -> None:
    written: list[bytes] = []
    relay = LineRelay(written.append)
    streams = {w: b"".join(_lines(w, counts[w])) for w in (0, 1)}
    for w in (0, 1):
        relay.open(w)
    for w, size in cuts:  # each worker's bytes arrive in arbitrary pieces, interleaved
        chunk, streams[w] = streams[w][:size], streams[w][size:]
        if chunk:
            relay.feed(w, chunk)
    for w in (0, 1):
        if streams[w]:
            relay.feed(w, streams[w])
        relay.close(w)
    out = b"".join(written).splitlines()
    events = [json.loads(line) for line in out]  # raises on a glued or torn line
    for w in (0, 1):
        assert [e["i"] for e in events if e["worker"] == w] == list(range(counts[w]))


def test_a_line_without_its_newline_is_ended_when_the_stream_closes() -> None:
    written: list[bytes] = []
    relay = LineRelay(written.append)
    relay.open(5)
    relay.feed(5, b"Traceback (most recent call last)")
    assert written == []
    relay.close(5)
    assert written == [b"Traceback (most recent call last)\n"]


def test_an_endless_line_is_cut_at_the_bound() -> None:
    written: list[bytes] = []
    relay = LineRelay(written.append, max_line=10)
    relay.open(1)
    relay.feed(1, b"a" * 25)
    assert written == [b"a" * 10 + b"\n", b"a" * 10 + b"\n"]
    relay.close(1)
    assert written[-1] == b"aaaaa\n"
