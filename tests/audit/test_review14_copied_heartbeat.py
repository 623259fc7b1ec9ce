"""Review of issue 14: a checkpoint line copied again. The stale-checkpoint rule
caught a line repeated right after itself, but compared a same-size checkpoint only
with the line before it: with two heartbeats of one size (same tree signed at two
times), the first one appended again after the second verified VALID."""

from __future__ import annotations

from pathlib import Path

from ztproxy.audit.chain import ChainWriter
from ztproxy.audit.report import Kind
from ztproxy.audit.verify import verify_directory

from .conftest import Clock, event


def test_earlier_heartbeat_appended_again_is_stale(tmp_path: Path, signer, public) -> None:
    clock = Clock()
    chain = ChainWriter(tmp_path, 0, "test", signer, clock=clock, fsync="never")
    chain.open()
    for i in range(4):
        chain.write([event(i)])
    chain.checkpoint()
    clock.advance(60)
    chain.checkpoint()  # a heartbeat: the same tree, signed at another time
    clock.advance(60)
    chain.close()
    cps = tmp_path / "w0-checkpoints.jsonl"
    lines = cps.read_bytes().split(b"\n")[:-1]
    assert verify_directory(tmp_path, [public], workers=1).exit_code == 0
    sizes = [line.split(b"\\n")[1] for line in lines]
    assert sizes[-2:] == [b"4", b"4"], sizes  # two heartbeats of size 4 at the end
    cps.write_bytes(cps.read_bytes() + lines[-2] + b"\n")
    report = verify_directory(tmp_path, [public], workers=1)
    assert report.exit_code == 1, report.to_text()
    assert any(f.kind is Kind.STALE_CHECKPOINT for f in report.chains[0].findings)
