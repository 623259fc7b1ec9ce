"""Findings 2, 5 and 6: verify's exit codes mean one thing each, non-canonical records
are INVALID wherever they are, and a stale checkpoint appended again is INVALID (and
`audit checkpoint` hands out the largest one)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings

from ztproxy.audit.canonical import is_canonical_line
from ztproxy.audit.chain import ChainWriter
from ztproxy.audit.note import parse_signed_checkpoint
from ztproxy.audit.record import build_lines, split_line
from ztproxy.audit.report import Kind
from ztproxy.audit.verify import verify_directory

from .conftest import Clock, event, events, run_cli, write_log

SEG = "w0-000001.jsonl"


def signed_log(directory: Path, signer, n: int = 12) -> None:  # type: ignore[no-untyped-def]
    write_log(directory, signer, [event(i) for i in range(n)], checkpoint_every=4, per_segment=100)


def crashed_log(directory: Path, signer, n: int = 8) -> None:  # type: ignore[no-untyped-def]
    """Records 0..3 signed, 4..n-1 an unsigned tail (a crash: no final checkpoint)."""
    chain = ChainWriter(directory, 0, "test", signer, clock=Clock(), fsync="never")
    chain.open()
    for i in range(n):
        chain.write([event(i)])
        if i == 3:
            chain.checkpoint()
    chain.close_quietly()


def lines(directory: Path) -> list[bytes]:
    return (directory / SEG).read_bytes().split(b"\n")[:-1]


def put(directory: Path, records: list[bytes]) -> None:
    (directory / SEG).write_bytes(b"".join(r + b"\n" for r in records))


def rehash(body_line: bytes) -> bytes:
    """The line with its hash member made true for its (edited) bytes."""
    parts = split_line(body_line)
    assert parts is not None
    stored, body = parts
    leaf = hashlib.sha256(b"\x00" + body).hexdigest().encode()
    return body_line.replace(stored, leaf)


# -- finding 2: exit codes ---------------------------------------------------------------
def test_exit_codes_each_mean_one_thing(tmp_path: Path, signer, public, keydir) -> None:
    pub = str(keydir / "audit-public.pem")
    signed_log(tmp_path / "a", signer)
    assert run_cli(["verify", str(tmp_path / "a"), "--key", pub])[0] == 0
    crashed_log(tmp_path / "b", signer)
    code, out, _ = run_cli(["verify", str(tmp_path / "b"), "--key", pub])
    assert code == 3 and "UNSIGNED TAIL at seq 4" in out


def test_no_checkpoints_at_all_is_not_an_unsigned_tail(tmp_path: Path, signer, keydir) -> None:
    pub = str(keydir / "audit-public.pem")
    signed_log(tmp_path, signer)
    (tmp_path / "w0-checkpoints.jsonl").unlink()
    code, out, _ = run_cli(["verify", str(tmp_path), "--key", pub])
    assert code == 4, out
    assert "UNSIGNED" in out and "no signed checkpoint" in out.lower()
    assert "UNSIGNED TAIL" not in out


def test_fabricated_log_without_checkpoint_exits_4(tmp_path: Path, keydir) -> None:
    built, _, _ = build_lines([event(i) for i in range(5)], seq=0, prev="00" * 32, worker=0)
    (tmp_path / SEG).write_bytes(b"".join(built))
    code, out, _ = run_cli(["verify", str(tmp_path), "--key", str(keydir / "audit-public.pem")])
    assert code == 4 and "no signed checkpoint" in out.lower()


def test_invalid_summary_does_not_also_claim_an_unsigned_tail(
    tmp_path: Path, signer, other_keydir
) -> None:
    signed_log(tmp_path, signer)
    code, out, _ = run_cli(
        ["verify", str(tmp_path), "--key", str(other_keydir / "audit-public.pem")]
    )
    assert code == 1 and "UNSIGNED TAIL" not in out


# -- finding 5: canonical form -------------------------------------------------------------
def test_hash_member_moved_in_a_signed_record_is_invalid(tmp_path: Path, signer, public) -> None:
    signed_log(tmp_path, signer)
    records = lines(tmp_path)
    obj = json.loads(records[5])
    stored = obj.pop("hash")
    moved = (
        json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()[:-1]
        + b',"hash":"'
        + stored.encode()
        + b'"}'
    )
    records[5] = moved
    put(tmp_path, records)
    report = verify_directory(tmp_path, [public])
    bad = report.chains[0].first_tampering
    assert report.exit_code == 1 and bad is not None
    assert (bad.kind, bad.seq, bad.segment) == (Kind.MODIFIED, 5, SEG)
    assert "canonical" in bad.detail


@pytest.mark.parametrize(
    "edit",
    [
        (b'"status":200', b'"status":200,"status":200'),  # duplicate key
        (b'"status":200', b'"status":0.0'),
        (b'"status":200', b'"status":-0'),
        (b'"status":200', b'"status": 200'),  # whitespace
        (b'"method":"GET"', b'"method":"\\u0047ET"'),  # an escape RFC 8785 does not write
    ],
    ids=["duplicate-key", "0.0", "-0", "whitespace", "needless-escape"],
)
def test_non_canonical_record_in_the_unsigned_tail_is_invalid(
    tmp_path: Path, signer, public, edit: tuple[bytes, bytes]
) -> None:
    crashed_log(tmp_path, signer)
    records = lines(tmp_path)
    last = len(records) - 1
    target = next(i for i in range(last, 3, -1) if edit[0] in records[i])
    assert target == last  # the last record: nothing chains to its hash
    records[target] = rehash(records[target].replace(*edit))
    put(tmp_path, records)
    report = verify_directory(tmp_path, [public])
    bad = report.chains[0].first_tampering
    assert report.exit_code == 1, report.to_text()
    assert bad is not None and (bad.kind, bad.seq, bad.segment) == (Kind.MODIFIED, target, SEG)


@settings(max_examples=200, deadline=None)
@given(events())
def test_every_record_the_writer_makes_is_canonical(ev) -> None:  # type: ignore[no-untyped-def]
    built, _, _ = build_lines([ev], seq=3, prev="ab" * 32, worker=1)
    assert is_canonical_line(built[0][:-1])


# -- finding 6: a stale checkpoint appended again --------------------------------------------
def test_stale_checkpoint_reappended_is_invalid_and_not_handed_out(
    tmp_path: Path, signer, public, keydir
) -> None:
    signed_log(tmp_path, signer, n=29)
    path = tmp_path / "w0-checkpoints.jsonl"
    entries = path.read_bytes().split(b"\n")[:-1]
    sizes = [parse_signed_checkpoint(json.loads(e)["note"]).checkpoint.size for e in entries]
    stale = entries[sizes.index(4)]
    with path.open("ab") as fh:
        fh.write(stale + b"\n")
    report = verify_directory(tmp_path, [public])
    assert report.exit_code == 1
    assert any(f.kind is Kind.STALE_CHECKPOINT for f in report.chains[0].findings)
    code, out, _ = run_cli(["checkpoint", str(tmp_path), "--key", str(keydir / "audit-public.pem")])
    assert code == 0 and parse_signed_checkpoint(out).checkpoint.size == 29


def test_same_checkpoint_line_twice_is_invalid(tmp_path: Path, signer, public) -> None:
    signed_log(tmp_path, signer)
    path = tmp_path / "w0-checkpoints.jsonl"
    last = path.read_bytes().split(b"\n")[-2]
    with path.open("ab") as fh:
        fh.write(last + b"\n")
    assert verify_directory(tmp_path, [public]).exit_code == 1
