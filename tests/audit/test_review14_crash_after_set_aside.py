"""Review of issue 14: a crash between setting aside and the signed `recovery`
record. recover() moves the forged bytes into quarantine/ first; if the process dies
before the recovery record is written, the next start finds a clean tail and says
nothing: the signed log never states what was set aside (and quarantine/ is as easy
to delete as the forged record was to plant). What was set aside must be stated by
the next start that gets to write."""

from __future__ import annotations

from pathlib import Path

from ztproxy.audit import recovery as recovery_mod
from ztproxy.audit.verify import verify_directory

from .conftest import Clock
from .test_recovery_laundering import (
    FORGED_ID,
    chain_ids,
    forged_line,
    recovery_records,
    restart_and_write,
    write_and_stop,
)


def test_set_aside_stated_after_crash_before_recovery_record(
    tmp_path: Path, signer, public
) -> None:
    write_and_stop(tmp_path, signer)
    planted = forged_line(tmp_path)
    with (tmp_path / "w0-000001.jsonl").open("ab") as fh:
        fh.write(planted)
    # The first start: the forged record moved aside, then a crash (kill -9) before
    # the writer wrote anything.
    state = recovery_mod.recover(tmp_path, 0, signer.public, "test/w0", clock=Clock())
    assert state.set_aside
    assert any(planted in p.read_bytes() for p in (tmp_path / "quarantine").iterdir())
    restart_and_write(tmp_path, signer)  # the second start, which gets to write
    assert FORGED_ID not in chain_ids(tmp_path)
    assert verify_directory(tmp_path, [public], workers=1).exit_code == 0
    stated = [entry for rec in recovery_records(tmp_path) for entry in rec["set_aside"]]
    assert any(state.set_aside[0].sha256 in str(entry) for entry in stated), stated


def test_set_aside_stated_once_after_a_clean_recovery(tmp_path: Path, signer, public) -> None:
    write_and_stop(tmp_path, signer)
    with (tmp_path / "w0-000001.jsonl").open("ab") as fh:
        fh.write(forged_line(tmp_path))
    restart_and_write(tmp_path, signer)
    restart_and_write(tmp_path, signer)
    assert len(recovery_records(tmp_path)) == 1
    assert verify_directory(tmp_path, [public], workers=1).exit_code == 0


def test_planted_journal_line_is_not_stated_as_a_move(tmp_path: Path, signer, public) -> None:
    """The journal is unsigned: a line naming bytes that are not in quarantine/ is not
    stated; one that is, is stated as coming from the journal, never as a move."""
    write_and_stop(tmp_path, signer)
    quarantine = tmp_path / "quarantine"
    quarantine.mkdir()
    (quarantine / "planted").write_bytes(b"x")
    (quarantine / "w0.pending").write_text(
        '{"source": "w0-000001.jsonl", "begin": 0, "end": 9, "sha256": "'
        + "0" * 64
        + '", "moved_to": "quarantine/planted", "why": "invented"}\n'
    )
    restart_and_write(tmp_path, signer)
    assert recovery_records(tmp_path) == []
    assert verify_directory(tmp_path, [public], workers=1).exit_code == 0


class _Killed(BaseException):
    """Stands for kill -9 at that instant."""


def test_set_aside_stated_after_crash_right_after_the_move(
    tmp_path: Path, signer, public, monkeypatch
) -> None:
    """The crash lands right after a whole planted segment was renamed into
    quarantine/, before anything else: the move was journalled before it was made."""
    write_and_stop(tmp_path, signer)
    planted = forged_line(tmp_path)
    (tmp_path / "w0-000002.jsonl").write_bytes(planted)
    real_rename = recovery_mod.os.rename

    def rename_then_die(src: object, dst: object) -> None:
        real_rename(src, dst)  # type: ignore[arg-type]
        raise _Killed

    monkeypatch.setattr(recovery_mod.os, "rename", rename_then_die)
    try:
        restart_and_write(tmp_path, signer)
    except _Killed:
        pass
    monkeypatch.undo()
    assert any(planted in p.read_bytes() for p in (tmp_path / "quarantine").iterdir())
    restart_and_write(tmp_path, signer)
    assert FORGED_ID not in chain_ids(tmp_path)
    stated = [entry for rec in recovery_records(tmp_path) for entry in rec["set_aside"]]
    assert any("w0-000002.jsonl" in str(entry) for entry in stated), stated
    assert verify_directory(tmp_path, [public], workers=1).exit_code == 0
