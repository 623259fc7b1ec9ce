"""The fast paths (issue 7's audit targets) give exactly what the slow ones give.

- records: the generated per-shape encoders against the general path
  (canonical_json on a dict) and against `rfc8785`, over hostile strings and values
  outside the fast path's space;
- verify: the buffer walk against the per-line walk it replaced, on damaged logs;
- Merkle: bulk `extend` in any split against the RFC 6962 definition;
- reading: `LineChunks` against splitting the whole file;
- the writer hand-off: no record is left behind, and a burst wakes the writer a
  handful of times, not once per record.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from pathlib import Path

import pytest
import rfc8785
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ztproxy.audit import AuditLog, fanout, merkle, writer
from ztproxy.audit.canonical import INT_LIMIT, canonical_json
from ztproxy.audit.record import (
    HASH_MEMBER,
    build_from_fields,
    build_lines,
    build_record,
    record_fields,
)
from ztproxy.audit.segment import LineChunks, split_lines
from ztproxy.audit.verify import verify_directory
from ztproxy.audit.walk import fast_walk, start, walk_chunk
from ztproxy.audit.writer import Mailbox
from ztproxy.model import AuditEvent

from .conftest import config, event, write_log
from .test_merkle import mth

# Strings that make JSON escape, that JSON leaves alone although they look risky
# (DEL, U+2028, non-BMP), and lone surrogates (possible in decoded token claims).
_nasty = st.lists(
    st.sampled_from(
        [
            '"',
            "\\",
            "\n",
            "\x00",
            "\x1f",
            "\x7f",
            "\u2028",
            "é",
            "😀",
            "\ud800",
            "a",
            ",",
            ":",
            "{",
            "}",
            "%",
            "%s",
            "{x}",
            '","hash":"',
        ]
    )
    | st.text(max_size=3),
    max_size=6,
).map("".join)
_opt = st.none() | _nasty
_odd = (
    st.floats(allow_nan=False)
    | st.booleans()
    | st.integers(2**53 - 5, 2**64)
    | st.integers(-(2**64), -(2**53) + 5)
)


@st.composite
def hostile_events(draw: st.DrawFn) -> AuditEvent:
    """Events as the model types them, then, sometimes, a value of the wrong type
    (what the general path must make safe)."""
    fields: dict[str, object] = {
        "kind": draw(_nasty),
        "time": draw(_nasty),
        "request_id": draw(_nasty),
        "source_address": draw(_nasty),
        "reason": draw(_nasty),
        "decision": draw(_nasty),
        "status": draw(st.integers(-INT_LIMIT, INT_LIMIT)),
        "latency_us": draw(st.integers(-INT_LIMIT, INT_LIMIT)),
        "policy_reasons": tuple(draw(st.lists(_nasty, max_size=3))),
    }
    for name in (
        "source_spiffe_id",
        "source_cert_sha256",
        "user_issuer",
        "user_subject",
        "device_id",
        "method",
        "host",
        "path",
        "destination_service",
        "route",
        "policy_revision",
        "policy_input_sha256",
    ):
        fields[name] = draw(_opt)
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(fields)))
        fields[name] = (
            list(fields[name])
            if name == "policy_reasons"  # type: ignore[call-overload]
            else draw(_odd)
        )
    return AuditEvent(**fields)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    hostile_events(),
    st.integers(0, INT_LIMIT),
    st.binary(min_size=32, max_size=32),
    st.integers(0, 999),
)
def test_fast_records_equal_the_general_path(
    ev: AuditEvent, seq: int, prev: bytes, worker: int
) -> None:
    fast = build_record(ev, seq=seq, prev=prev.hex(), worker=worker)
    general = build_from_fields(record_fields(ev, seq=seq, prev=prev.hex(), worker=worker))
    assert fast == general
    record = json.loads(fast.line)
    assert fast.line[:-1] == rfc8785.dumps(record)  # canonical, with its hash member
    del record["hash"]
    assert fast.leaf == hashlib.sha256(b"\x00" + rfc8785.dumps(record)).digest()


@given(st.lists(hostile_events(), max_size=6), st.integers(0, 2**40))
def test_build_lines_chains_like_one_record_at_a_time(evs: list[AuditEvent], seq: int) -> None:
    lines, leaves, last = build_lines(evs, seq=seq, prev="ab" * 32, worker=3)
    prev = "ab" * 32
    for i, ev in enumerate(evs):
        one = build_record(ev, seq=seq + i, prev=prev, worker=3)
        assert (lines[i], leaves[i]) == (one.line, one.leaf)
        prev = one.leaf.hex()
    assert last == prev


def test_general_path_reference_is_rfc8785_for_plain_dicts() -> None:
    fields = record_fields(event(3), seq=3, prev="00" * 32, worker=0)
    assert canonical_json(fields) == rfc8785.dumps(fields)


# -- verify: the buffer walk against the per-line walk it replaced -----------------
def reference_walk(lines: list[bytes], genesis: str | None) -> tuple[list[bytes], int]:
    """The fast walk as it was before the buffer walk (one line at a time)."""
    leaves: list[bytes] = []
    prev = genesis.encode() if genesis is not None else None
    for pos, line in enumerate(lines):
        at = line.find(HASH_MEMBER)
        end = at + len(HASH_MEMBER) + 64
        if at < 0 or line[end : end + 1] != b'"':
            return leaves, pos
        digest = hashlib.sha256(b"\x00" + line[:at] + line[end + 1 :]).digest()
        stored = line[at + len(HASH_MEMBER) : end]
        if digest.hex().encode() != stored:
            return leaves, pos
        p = line.find(b',"prev":"', end)
        if p < 0 or (prev is not None and line[p + 9 : p + 74] != prev + b'"'):
            return leaves, pos
        if line.find(b',"seq":%d,' % pos, p) < 0:
            return leaves, pos
        leaves.append(digest)
        prev = stored
    return leaves, len(lines)


def _chain_lines(n: int) -> tuple[str, list[bytes]]:
    genesis = "11" * 32
    lines, _, _ = build_lines([event(i) for i in range(n)], seq=0, prev=genesis, worker=0)
    return genesis, [line[:-1] for line in lines]


# An edit: (line, where, text). `where` is an offset from a member the walk checks
# (the hash and its closing quote, prev, seq) or from the line start; text b""
# deletes (odd offset) or duplicates (even) the line.
_anchor = st.sampled_from([b"", b',"hash":"', b',"prev":"', b',"seq":'])
_edits = st.lists(
    st.tuples(
        st.integers(0, 30),
        _anchor,
        st.integers(-2, 80),
        st.sampled_from(
            [
                b"",
                b"\n",
                b"0",
                b"1",
                b"A",
                b"x",
                b'"',
                b',"hash":"',
                b',"prev":"',
                b',"seq":1,',
                b"\\",
            ]
        ),
    ),
    max_size=3,
)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 12), _edits, st.booleans(), st.integers(1, 4000))
@example(5, [(0, b"", 1, b"")], False, 4000)  # first record gone, genesis unknown: seq
@example(3, [(1, b',"hash":"', 64, b"x")], True, 100)  # the hash's closing quote
@example(4, [(2, b',"seq":', 0, b"7")], True, 1)  # a wrong seq in a chained record
def test_buffer_walk_equals_the_per_line_walk(
    n: int, edits: list[tuple[int, int, bytes]], known: bool, chunk: int
) -> None:
    genesis, lines = _chain_lines(n)
    for index, anchor, offset, text in edits:  # overwrite, or delete/duplicate a line
        if not lines:
            break
        i = index % len(lines)
        if text == b"":
            lines.pop(i) if offset % 2 else lines.insert(i, lines[i])
        else:
            line = lines[i]
            at = max(0, line.find(anchor) + len(anchor) + offset) if anchor else offset
            at = min(at, len(line))
            lines[i] = line[:at] + text + line[at + len(text) :]
    lines = b"\n".join(lines).split(b"\n") if lines else []  # an inserted newline splits
    expected = reference_walk(lines, genesis if known else None)
    assert fast_walk(lines, genesis if known else None) == expected
    # the same, fed in chunks at line boundaries, the way verify reads a segment
    state = start(genesis if known else None)
    data = b"".join(line + b"\n" for line in lines)
    leaves: list[bytes] = []
    begin = 0
    while begin < len(data):
        cut = data.rfind(b"\n", begin, begin + chunk) + 1
        if cut <= begin:  # a line longer than a chunk comes whole
            cut = data.index(b"\n", begin) + 1
        walk_chunk(state, data, begin, cut)
        leaves += state.leaves
        state.leaves.clear()
        begin = cut
    assert (leaves, state.pos) == expected
    assert state.ok is (expected[1] == len(lines))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"\n")), st.integers(1, 64))
def test_line_chunks_equal_splitting_the_whole_file(data: bytes, size: int) -> None:
    with _tmpfile(data) as path:
        chunks = LineChunks(path, size)
        got = [bytes(d[b:e]) for d, b, e in chunks]
        assert all(c.endswith(b"\n") for c in got)
        expected = split_lines(data)
        assert b"".join(got).split(b"\n")[:-1] == expected.lines
        assert chunks.torn == expected.torn


class _tmpfile:
    def __init__(self, data: bytes) -> None:
        import tempfile

        self._dir = tempfile.TemporaryDirectory()
        self.path = Path(self._dir.name) / "f"
        self.path.write_bytes(data)

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        self._dir.cleanup()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 600), st.lists(st.integers(1, 300), max_size=12))
def test_bulk_extend_equals_the_definition_in_any_split(n: int, cuts: list[int]) -> None:
    items = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    tree, done = merkle.CompactTree(), 0
    for cut in cuts:
        tree.extend(items[done : done + cut])
        done = min(n, done + cut)
        assert tree.size == done and tree.root() == mth(items[:done])
    tree.extend(items[done:])
    one = merkle.CompactTree()
    for leaf in items:
        one.append(leaf)
    assert tree.root() == one.root() == mth(items)
    assert tree.frontier() == one.frontier()


# -- the writer hand-off -------------------------------------------------------------
def test_mailbox_loses_no_wakeup_under_a_racing_producer() -> None:
    """A lost wake-up would leave records queued while the writer sleeps its full
    timeout (2 s here); the whole exchange takes milliseconds when none is lost."""
    box = Mailbox()
    got: list[AuditEvent] = []
    total = 3000

    def consumer() -> None:
        deadline = time.monotonic() + 10
        while len(got) < total and time.monotonic() < deadline:
            if not box.items:
                box.park(2.0)
            while box.items:
                got.append(box.items.popleft())

    thread = threading.Thread(target=consumer)
    began = time.monotonic()
    thread.start()
    ev = event(0)
    for i in range(total):
        box.put(ev)
        if i % 3 == 0:
            time.sleep(0)  # let the consumer park between puts, again and again
    thread.join(10)
    assert len(got) == total
    assert time.monotonic() - began < 1.5
    assert 0 < box.wakeups <= total


def test_park_returns_at_once_for_a_record_queued_before_it_announced_itself() -> None:
    # The interleaving a lost wake-up needs: put() ran (and saw parked False) after
    # the writer last looked but before it parked. park() must look again.
    box = Mailbox()
    box.items.append(event(0))  # what put() leaves when it does not wake anyone
    began = time.monotonic()
    assert box.park(2.0) is True
    assert time.monotonic() - began < 0.5 and not box.parked


async def test_burst_of_appends_wakes_the_writer_rarely_and_loses_nothing(
    tmp_path: Path, keydir: Path, public
) -> None:  # type: ignore[no-untyped-def]
    log = AuditLog(config(tmp_path / "log", keydir, queue_size=20_000))
    await log.start()
    for burst in range(10):
        for i in range(500):
            log.append(event(burst * 500 + i))
        await asyncio.sleep(0.02)  # the writer drains, parks, is woken by the next burst
    await log.close()
    stats = log.stats()
    assert stats["records_written"] == 5000 and stats["dropped"] == 0
    assert stats["writer_wakeups"] <= 30  # about one per burst, not one per record
    report = verify_directory(tmp_path / "log", [public])
    assert report.valid and report.chains[0].records == 5000


@pytest.mark.parametrize("flush_ms", [100.0, 2.0])
async def test_steady_appends_are_written_once_per_flush_interval(
    tmp_path: Path, keydir: Path, public, flush_ms: float
) -> None:  # type: ignore[no-untyped-def]
    """A steady trickle (one record a millisecond, as requests come) is written in one
    step per flush interval, not one per record or per wake-up; nothing is lost."""
    log = AuditLog(config(tmp_path / "log", keydir, flush_interval_ms=flush_ms))
    await log.start()
    loop = asyncio.get_running_loop()
    began, n = loop.time(), 0
    while loop.time() - began < 0.6:
        log.append(event(n))
        n += 1
        await asyncio.sleep(0.001)
    elapsed = loop.time() - began
    await log.close()
    stats = log.stats()
    assert stats["records_written"] == n and stats["dropped"] == 0
    if flush_ms == 100.0:  # the writer aims at FLUSH_TARGET of the interval (the margin)
        assert stats["writer_flushes"] <= elapsed / (0.1 * writer.FLUSH_TARGET) + 3
    else:  # the control: a short interval really does write more often
        assert stats["writer_flushes"] >= 20
    report = verify_directory(tmp_path / "log", [public])
    assert report.valid and report.chains[0].records == n


# -- verify across processes ---------------------------------------------------------
@pytest.fixture
def fan_out(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Fan out even for tiny chains, in pieces of about three records; returns a
    list that counts the chains the parallel walk vouched for."""
    monkeypatch.setattr(fanout, "MIN_PARALLEL_BYTES", 0)
    monkeypatch.setattr(fanout, "RANGE_BYTES", 2500)
    used: list[int] = []
    real = fanout.walk_parallel

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        result = real(*args, **kwargs)
        used.append(result is not None)
        return result

    monkeypatch.setattr(fanout, "walk_parallel", spy)
    return used


def test_parallel_verify_of_an_untouched_log_is_valid(
    tmp_path: Path, signer, public, fan_out: list[int]
) -> None:
    assert threading.active_count() == 1  # else the fan-out rightly declines to fork
    write_log(tmp_path, signer, [event(i) for i in range(40)], checkpoint_every=7, per_segment=15)
    parallel = verify_directory(tmp_path, [public], workers=2)
    assert fan_out == [True] and parallel.valid
    assert parallel.to_dict() == verify_directory(tmp_path, [public], workers=1).to_dict()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(1, 30), _edits, st.integers(1, 6), st.integers(2, 12))
def test_parallel_verify_reports_what_the_sequential_one_does(
    tmp_path_factory: pytest.TempPathFactory,
    signer,
    public,
    fan_out: list[int],
    n: int,
    edits: list[tuple[int, bytes, int, bytes]],
    every: int,
    per_segment: int,
) -> None:
    directory = tmp_path_factory.mktemp("fan")
    write_log(
        directory,
        signer,
        [event(i) for i in range(n)],
        checkpoint_every=every,
        per_segment=per_segment,
    )
    segments = sorted(directory.glob("w0-0*.jsonl"))
    for index, anchor, offset, text in edits:
        path = segments[index % len(segments)]
        lines = path.read_bytes().split(b"\n")[:-1]
        if not lines:
            continue
        i = offset % len(lines)
        if text == b"":
            lines.pop(i) if index % 2 else lines.insert(i, lines[i])
        else:
            line = lines[i]
            at = max(0, line.find(anchor) + len(anchor) + offset) if anchor else offset
            lines[i] = line[:at] + text + line[at + len(text) :]
        path.write_bytes(b"".join(line + b"\n" for line in lines))
    parallel = verify_directory(directory, [public], workers=2)
    sequential = verify_directory(directory, [public], workers=1)
    assert parallel.to_dict() == sequential.to_dict()
    assert fan_out  # the parallel walk ran (and, where it vouched, agreed)


def test_parallel_verify_catches_a_segment_from_another_chain(
    tmp_path: Path, signer, public, fan_out: list[int]
) -> None:
    # Same events, same seqs, another genesis: only the prev link at the segment
    # boundary (where a new piece starts) tells the chains apart.
    mine, other = tmp_path / "mine", tmp_path / "other"
    for directory in (mine, other):
        write_log(
            directory, signer, [event(i) for i in range(12)], checkpoint_every=4, per_segment=6
        )
    (mine / "w0-000002.jsonl").write_bytes((other / "w0-000002.jsonl").read_bytes())
    parallel = verify_directory(mine, [public], workers=2)
    assert fan_out == [False] and not parallel.valid
    assert parallel.to_dict() == verify_directory(mine, [public], workers=1).to_dict()


def test_parallel_verify_checks_where_each_piece_starts(
    tmp_path: Path, signer, public, fan_out: list[int]
) -> None:
    # No checkpoint, so no genesis: the first record's prev is not checked, and a
    # log cut at its head is only caught by its first seq.
    chain = write_log(
        tmp_path, signer, [event(i) for i in range(9)], checkpoint_every=100, per_segment=100
    )
    chain.close_quietly()
    (tmp_path / "w0-checkpoints.jsonl").write_bytes(b"")
    segment = tmp_path / "w0-000001.jsonl"
    segment.write_bytes(segment.read_bytes().split(b"\n", 1)[1])
    parallel = verify_directory(tmp_path, [public], workers=2)
    assert fan_out == [False]
    assert parallel.to_dict() == verify_directory(tmp_path, [public], workers=1).to_dict()
    assert parallel.chains[0].first_tampering is not None
