"""Review of issue 14: file names that alias a chain's files. The name patterns
accepted `w00-...` as worker 0 and any width of segment number, so a planted
`w00-checkpoints.jsonl` silently replaced the real checkpoints file for verify (the
real one, whatever it held, was never read), and a segment renamed to another
spelling of its number still verified VALID. Only the writer's spelling counts now."""

from __future__ import annotations

import os
from pathlib import Path

from ztproxy.audit.segment import discover
from ztproxy.audit.verify import verify_directory

from .conftest import event, write_log


def _log(directory: Path, signer) -> None:  # type: ignore[no-untyped-def]
    write_log(directory, signer, [event(i) for i in range(12)], checkpoint_every=4, per_segment=5)


def test_planted_w00_checkpoints_does_not_replace_the_real_file(
    tmp_path: Path, signer, public
) -> None:
    _log(tmp_path, signer)
    real = tmp_path / "w0-checkpoints.jsonl"
    first = real.read_bytes().split(b"\n")[0] + b"\n"
    (tmp_path / "w00-checkpoints.jsonl").write_bytes(real.read_bytes())
    real.write_bytes(real.read_bytes() + first)  # the real file: a stale line appended
    assert discover(tmp_path)[0].checkpoints == real
    assert verify_directory(tmp_path, [public], workers=1).exit_code == 1


def test_segment_renamed_to_another_spelling_is_not_valid(tmp_path: Path, signer, public) -> None:
    _log(tmp_path, signer)
    os.rename(tmp_path / "w0-000003.jsonl", tmp_path / "w0-0000003.jsonl")
    assert verify_directory(tmp_path, [public], workers=1).exit_code == 1
    (tmp_path / "b").mkdir()
    _log(tmp_path / "b", signer)
    os.rename(tmp_path / "b" / "w0-000002.jsonl", tmp_path / "b" / "w00-000002.jsonl")
    assert verify_directory(tmp_path / "b", [public], workers=1).exit_code == 1


def test_untouched_log_still_valid(tmp_path: Path, signer, public) -> None:
    _log(tmp_path, signer)
    assert verify_directory(tmp_path, [public], workers=1).exit_code == 0
