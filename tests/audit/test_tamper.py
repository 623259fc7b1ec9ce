"""Any single tampering of a generated log is reported as INVALID with the right kind
and place; an untouched log always verifies. (Issue 5, "Tests", first bullet.)"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ztproxy.audit.keys import PublicKey, SigningKey
from ztproxy.audit.note import parse_signed_checkpoint, sign_note
from ztproxy.audit.record import build_from_fields
from ztproxy.audit.report import Kind, Report
from ztproxy.audit.verify import verify_directory

from .conftest import event, write_log

# ZTPROXY_AUDIT_EXAMPLES=500 for a deeper search than the default quick run.
SETTINGS = settings(
    max_examples=int(os.environ.get("ZTPROXY_AUDIT_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@dataclass(frozen=True)
class Shape:
    n: int
    every: int
    per_segment: int


shapes = st.builds(Shape, st.integers(2, 18), st.integers(1, 5), st.integers(2, 7))


class Log:
    """A written log and handles to its files, as an attacker would edit them."""

    def __init__(self, root: Path, key: SigningKey, shape: Shape, salt: str = "") -> None:
        self.dir = root
        self.shape = shape
        evs = [event(i, request_id=f"{salt}req-{i}") for i in range(shape.n)]
        write_log(root, key, evs, checkpoint_every=shape.every, per_segment=shape.per_segment)
        self.segments = sorted(root.glob("w0-0*.jsonl"))
        self.checkpoints = root / "w0-checkpoints.jsonl"

    def lines(self) -> list[tuple[Path, list[bytes]]]:
        return [(p, p.read_bytes().split(b"\n")[:-1]) for p in self.segments]

    def locate(self, pos: int) -> tuple[Path, int]:
        for path, lines in self.lines():
            if pos < len(lines):
                return path, pos
            pos -= len(lines)
        raise IndexError(pos)

    def record(self, pos: int) -> bytes:
        path, index = self.locate(pos)
        return path.read_bytes().split(b"\n")[index]

    def edit(self, path: Path, lines: list[bytes]) -> None:
        path.write_bytes(b"".join(line + b"\n" for line in lines))

    def segment_of(self, pos: int) -> str:
        return self.locate(min(pos, self.shape.n - 1))[0].name

    def checkpoint_lines(self) -> list[bytes]:
        return self.checkpoints.read_bytes().split(b"\n")[:-1]


def first(report: Report) -> tuple[Kind, int | None, str | None]:
    assert report.status == "invalid", report.to_text()
    (chain,) = report.chains
    found = chain.first_tampering
    assert found is not None
    return found.kind, found.seq, found.segment


def verify(log: Log, key: PublicKey, **kw) -> Report:  # type: ignore[no-untyped-def]
    return verify_directory(log.dir, [key], **kw)


@SETTINGS
@given(shapes)
def test_untouched_log_always_verifies(signer, public, shape: Shape) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = Log(Path(tmp), signer, shape)
        report = verify(log, public)
        assert report.valid and report.exit_code == 0, report.to_text()
        assert report.chains[0].records == report.chains[0].signed == shape.n
        assert all(s.status == "valid" for s in report.chains[0].segments)


@SETTINGS
@given(shapes, st.data())
def test_one_changed_byte_is_modified_at_its_seq(signer, public, shape, data) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = Log(Path(tmp), signer, shape)
        pos = data.draw(st.integers(0, shape.n - 1), label="record")
        path, index = log.locate(pos)
        lines = path.read_bytes().split(b"\n")[:-1]
        line = bytearray(lines[index])
        at = data.draw(st.integers(0, len(line) - 1), label="byte")
        line[at] ^= data.draw(st.integers(1, 255), label="xor")
        lines[index] = bytes(line)
        log.edit(path, lines)
        assert first(verify(log, public)) == (Kind.MODIFIED, pos, path.name)


@SETTINGS
@given(shapes, st.data())
def test_deleted_record_is_removed_or_truncated_at_its_seq(signer, public, shape, data):
    with tempfile.TemporaryDirectory() as tmp:
        log = Log(Path(tmp), signer, shape)
        pos = data.draw(st.integers(0, shape.n - 1), label="record")
        path, index = log.locate(pos)
        lines = path.read_bytes().split(b"\n")[:-1]
        del lines[index]
        log.edit(path, lines)
        kind, seq, _ = first(verify(log, public))
        assert (kind, seq) == ((Kind.REMOVED if pos < shape.n - 1 else Kind.TRUNCATED), pos)


@SETTINGS
@given(shapes, st.data())
def test_inserted_forged_record_is_inserted_at_its_place(signer, public, shape, data):
    with tempfile.TemporaryDirectory() as tmp:
        log = Log(Path(tmp), signer, shape)
        pos = data.draw(st.integers(0, shape.n - 1), label="before record")
        real = json.loads(log.record(pos))
        forged = {k: v for k, v in real.items() if k != "hash"}
        forged["decision"], forged["status"] = "allow", 200
        forged["reason"] = "forged-" + real["reason"]
        if data.draw(st.booleans(), label="naive forger (wrong prev)"):
            forged["prev"] = "0" * 64
        line = build_from_fields(forged).line[:-1]
        path, index = log.locate(pos)
        lines = path.read_bytes().split(b"\n")[:-1]
        lines.insert(index, line)
        log.edit(path, lines)
        assert first(verify(log, public)) == (Kind.INSERTED, pos, path.name)


@SETTINGS
@given(shapes, st.data())
def test_swapped_records_are_reordered_at_the_first(signer, public, shape, data):
    with tempfile.TemporaryDirectory() as tmp:
        log = Log(Path(tmp), signer, shape)
        i = data.draw(st.integers(0, shape.n - 2), label="i")
        j = data.draw(st.integers(i + 1, shape.n - 1), label="j")
        (pi, ii), (pj, ij) = log.locate(i), log.locate(j)
        a, b = log.record(i), log.record(j)
        li = pi.read_bytes().split(b"\n")[:-1]
        li[ii] = b
        log.edit(pi, li)
        lj = pj.read_bytes().split(b"\n")[:-1]
        lj[ij] = a
        log.edit(pj, lj)
        assert first(verify(log, public)) == (Kind.REORDERED, i, pi.name)


@SETTINGS
@given(shapes, st.data())
def test_truncated_tail_is_truncated_at_the_cut(signer, public, shape, data):
    with tempfile.TemporaryDirectory() as tmp:
        log = Log(Path(tmp), signer, shape)
        cut = data.draw(st.integers(0, shape.n - 1), label="keep records before")
        _cut_records(log, cut)
        kind, seq, _ = first(verify(log, public))
        assert (kind, seq) == (Kind.TRUNCATED, cut)


def _cut_records(log: Log, cut: int) -> None:
    for path, lines in log.lines():
        log.edit(path, lines[: max(cut, 0)])
        cut -= len(lines)


@SETTINGS
@given(shapes, st.data())
def test_tail_cut_with_its_checkpoints_needs_and_is_caught_by_a_trusted_checkpoint(
    signer, public, shape, data
):
    with tempfile.TemporaryDirectory() as tmp:
        log = Log(Path(tmp), signer, shape)
        cps = [json.loads(raw) for raw in log.checkpoint_lines()]
        sizes = [parse_signed_checkpoint(c["note"]).checkpoint.size for c in cps]
        smaller = sorted({s for s in sizes if s < shape.n})
        if not smaller:
            return
        cut = data.draw(st.sampled_from(smaller), label="cut at checkpoint size")
        trusted = parse_signed_checkpoint(cps[-1]["note"])  # kept by the auditor earlier
        _cut_records(log, cut)
        kept = [raw for raw, size in zip(log.checkpoint_lines(), sizes, strict=True) if size <= cut]
        log.checkpoints.write_bytes(b"".join(raw + b"\n" for raw in kept))
        assert verify(log, public).valid  # whole on its own: the reason to keep checkpoints
        kind, seq, _ = first(verify(log, public, trusted_checkpoint=trusted))
        assert (kind, seq) == (Kind.TRUNCATED, cut)


@SETTINGS
@given(shapes, st.data())
def test_segment_replaced_by_one_of_another_log_is_modified_at_its_start(
    signer, public, shape, data
):
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as tmp2:
        log = Log(Path(tmp), signer, shape)
        other = Log(Path(tmp2), signer, shape, salt="other-")
        q = data.draw(st.integers(0, len(log.segments) - 1), label="segment")
        if log.segments[q].stat().st_size == 0:
            return
        log.segments[q].write_bytes(other.segments[q].read_bytes())
        start = sum(len(lines) for _, lines in log.lines()[:q])
        assert first(verify(log, public)) == (Kind.MODIFIED, start, log.segments[q].name)


@SETTINGS
@given(shapes, st.data())
def test_checkpoint_resigned_with_another_key_is_unknown_key(
    signer, public, other_signer, shape, data
):
    with tempfile.TemporaryDirectory() as tmp:
        log = Log(Path(tmp), signer, shape)
        raws = log.checkpoint_lines()
        k = data.draw(st.integers(0, len(raws) - 1), label="checkpoint")
        entry = json.loads(raws[k])
        signed = parse_signed_checkpoint(entry["note"])
        entry["note"] = sign_note(signed.note.text, other_signer)
        raws[k] = json.dumps(entry).encode()
        log.checkpoints.write_bytes(b"".join(r + b"\n" for r in raws))
        size = signed.checkpoint.size
        kind, seq, segment = first(verify(log, public))
        if size:  # a chain's first checkpoint (size 0, signed at its start) has no seq
            assert (kind, seq, segment) == (Kind.UNKNOWN_KEY, size - 1, log.segment_of(size - 1))
        else:
            assert (kind, seq) == (Kind.UNKNOWN_KEY, None)
        assert verify_directory(log.dir, [public, other_signer.public]).valid


@SETTINGS
@given(shapes)
def test_log_checked_with_a_key_that_did_not_sign_it_is_unknown_key(
    signer, other_signer, shape
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = Log(Path(tmp), signer, shape)
        first_size = min(
            parse_signed_checkpoint(json.loads(raw)["note"]).checkpoint.size
            for raw in log.checkpoint_lines()
        )
        kind, seq, _ = first(verify(log, other_signer.public))
        assert (kind, seq) == (Kind.UNKNOWN_KEY, first_size - 1 if first_size else None)


@SETTINGS
@given(shapes, st.data())
def test_altered_signature_is_bad_signature(signer, public, shape, data) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = Log(Path(tmp), signer, shape)
        raws = log.checkpoint_lines()
        k = data.draw(st.integers(0, len(raws) - 1), label="checkpoint")
        entry = json.loads(raws[k])
        text, sig_line = entry["note"].rstrip("\n").rsplit("\n", 1)
        name, blob = sig_line[2:].split(" ")
        sig = bytearray(__import__("base64").b64decode(blob))
        sig[4 + data.draw(st.integers(0, 63))] ^= 1
        blob = __import__("base64").b64encode(bytes(sig)).decode()
        entry["note"] = f"{text}\n\u2014 {name} {blob}\n"
        raws[k] = json.dumps(entry).encode()
        log.checkpoints.write_bytes(b"".join(r + b"\n" for r in raws))
        size = parse_signed_checkpoint(entry["note"]).checkpoint.size
        kind, seq, _ = first(verify(log, public))
        assert (kind, seq) == (Kind.BAD_SIGNATURE, size - 1 if size else None)
