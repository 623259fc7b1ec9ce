"""Review of issue 14: files in the audit directory that are symlinks. Whoever can
plant a record there can plant a symlink; the writer followed them: the seal
(pwrite at offset 0) overwrote the start of any file the proxy may write, checkpoint
lines were appended to it, and recovery truncated a symlinked segment's target. The
writer now never follows a symlink for a file it writes (it refuses to start)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .test_recovery_laundering import forged_line, restart_and_write, write_and_stop

PRECIOUS = b"precious bytes the proxy may write but must not touch\n" * 4


@pytest.mark.parametrize("name", ["w0.seal", "w0-checkpoints.jsonl", "w0.lock"])
def test_writer_does_not_write_through_a_planted_symlink(tmp_path: Path, signer, name: str) -> None:
    log = tmp_path / "log"
    log.mkdir()
    write_and_stop(log, signer)
    outside = tmp_path / "outside"
    outside.write_bytes(PRECIOUS if name != "w0-checkpoints.jsonl" else (log / name).read_bytes())
    before = outside.read_bytes()
    (log / name).unlink()
    os.symlink(outside, log / name)
    with pytest.raises(OSError):
        restart_and_write(log, signer)
    assert outside.read_bytes() == before


def test_recovery_does_not_truncate_a_symlinked_segments_target(tmp_path: Path, signer) -> None:
    log = tmp_path / "log"
    log.mkdir()
    write_and_stop(log, signer)
    outside = tmp_path / "outside"
    outside.write_bytes((log / "w0-000001.jsonl").read_bytes() + forged_line(log))
    before = outside.read_bytes()
    (log / "w0-000001.jsonl").unlink()
    os.symlink(outside, log / "w0-000001.jsonl")
    with pytest.raises(OSError):
        restart_and_write(log, signer)
    assert outside.read_bytes() == before
