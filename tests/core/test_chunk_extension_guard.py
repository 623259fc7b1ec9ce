"""Issue 13, finding 6 (chunk extensions): the guard follows the request framing in
step with the parser, never refuses a request whose extensions are within the limit
(whatever the split of the bytes), and refuses the one that is not."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ztproxy.server.framing import CHUNKED, ChunkExtensionGuard

LIMIT = 64


@st.composite
def requests(draw: st.DrawFn, over: bool = False) -> tuple[bytes, list[tuple[int, int, str]]]:
    """Serialized pipelined requests; [(header end offset, framing, name)]."""
    out = bytearray()
    marks: list[tuple[int, int, str]] = []
    n = draw(st.integers(1, 4))
    bad_at = draw(st.integers(0, n - 1)) if over else -1
    for i in range(n):
        kind = draw(st.sampled_from(["get", "length", "chunked"])) if i != bad_at else "chunked"
        out += draw(st.sampled_from([b"", b"\r\n"])) if i == 0 else b""
        head = f"POST /r{i} HTTP/1.1\r\nHost: h\r\nX-Pad: {'p' * draw(st.integers(0, 50))}\r\n"
        if kind == "get":
            out += (head + "\r\n").encode()
            marks.append((len(out), 0, f"r{i}"))
        elif kind == "length":
            body = b"\r\n\r\n" * draw(st.integers(0, 5)) + b"x" * draw(st.integers(1, 40))
            out += (head + f"Content-Length: {len(body)}\r\n\r\n").encode()
            marks.append((len(out), len(body), f"r{i}"))
            out += body
        else:
            out += (head + "Transfer-Encoding: chunked\r\n\r\n").encode()
            marks.append((len(out), CHUNKED, f"r{i}"))
            chunks = draw(st.lists(st.integers(1, 30), max_size=4))
            for k, size in enumerate(chunks + [0]):
                ext_len = draw(st.integers(0, LIMIT))
                if i == bad_at and k == len(chunks):
                    ext_len = LIMIT + 40
                ext = (";e=" + "v" * max(ext_len - 3, 0)) if ext_len else ""
                out += f"{size:x}{ext}\r\n".encode()
                if size:
                    out += b"\r\n" * (size // 2) + b"z" * (size % 2) + b"\r\n"
            out += draw(st.sampled_from([b"\r\n", b"T: 1\r\n\r\n"]))
    return bytes(out), marks


def _run(
    data: bytes, marks: list[tuple[int, int, str]], cuts: list[int]
) -> tuple[list[str], ChunkExtensionGuard]:
    guard = ChunkExtensionGuard(LIMIT)
    refused: list[str] = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for a, b in zip(points, points[1:], strict=False):
        for end, framing, name in marks:  # the parser reports each header end it reads
            if a < end <= b:
                guard.message(framing, name)
        bad = guard.feed(data[a:b])
        if bad is not None:
            refused.append(bad)
    return refused, guard


@given(requests(), st.lists(st.integers(0, 10_000), max_size=8))
@settings(max_examples=400)
def test_within_limit_never_refused_and_in_step(req: tuple[bytes, list], cuts: list[int]) -> None:
    data, marks = req
    refused, guard = _run(data, marks, cuts)
    assert refused == []
    assert guard.watching  # it followed every message to the end


@given(requests(over=True), st.lists(st.integers(0, 10_000), max_size=8))
@settings(max_examples=300)
def test_over_limit_refused(req: tuple[bytes, list], cuts: list[int]) -> None:
    data, marks = req
    refused, _ = _run(data, marks, cuts)
    assert len(refused) == 1


def test_a_message_the_guard_did_not_see_stops_it_never_refuses() -> None:
    guard = ChunkExtensionGuard(LIMIT)
    guard.message(CHUNKED, "x")
    assert guard.feed(b"GET / HTTP/1.1\nHost: h\n\n") is None  # bare LF: not in step
    assert not guard.watching
