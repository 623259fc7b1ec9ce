"""Review of issue 14: in a SIGNED range verify only checks where the `hash` member
stands (the leaf hash does not cover its place). The check read the key before the
member from the raw bytes, so a string value holding `":` (escaped as `\\":`, e.g. a
request path `/x"a":y`) looked like a key below "hash": the hash member moved to just
after that value verified VALID. A moved member is a touched log: INVALID."""

from __future__ import annotations

import re
from pathlib import Path

from ztproxy.audit.report import Kind
from ztproxy.audit.verify import verify_directory

from .conftest import event, write_log

SEG = "w0-000001.jsonl"
MEMBER = re.compile(rb',"hash":"[0-9a-f]{64}"')


def _move_after_path(line: bytes) -> bytes:
    member = MEMBER.search(line)
    assert member is not None
    body = line[: member.start()] + line[member.end() :]
    at = body.index(b',"policy_input_sha256":')  # just after the "path" member
    return body[:at] + member.group() + body[at:]


def test_hash_member_moved_after_value_holding_quote_colon(tmp_path: Path, signer, public) -> None:
    events = [event(i, path='/x"a":y') if i == 1 else event(i) for i in range(4)]
    write_log(tmp_path, signer, events, checkpoint_every=4, per_segment=100)
    assert verify_directory(tmp_path, [public], workers=1).exit_code == 0
    seg = tmp_path / SEG
    lines = seg.read_bytes().split(b"\n")
    moved = _move_after_path(lines[1])
    assert moved != lines[1]
    lines[1] = moved
    seg.write_bytes(b"\n".join(lines))
    report = verify_directory(tmp_path, [public], workers=1)
    assert report.exit_code == 1, report.to_text()
    (chain,) = report.chains
    assert any(f.kind is Kind.MODIFIED and f.seq == 1 for f in chain.findings)


def test_hash_member_moved_in_plain_record_is_invalid(tmp_path: Path, signer, public) -> None:
    """Pins the ordinary case (no quote in any value)."""
    write_log(tmp_path, signer, [event(i) for i in range(4)], checkpoint_every=4, per_segment=100)
    seg = tmp_path / SEG
    lines = seg.read_bytes().split(b"\n")
    lines[2] = _move_after_path(lines[2])
    seg.write_bytes(b"\n".join(lines))
    assert verify_directory(tmp_path, [public], workers=1).exit_code == 1
