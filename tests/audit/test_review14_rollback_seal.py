"""Review of issue 14: a rollback below the writer's own seal goes unstated. After a
clean stop (records 0..5 signed, the seal naming size 6), someone without the key
cuts the segment and the checkpoints file back to size 3. The restarted writer
resumed from 3 and signed new records 3.. over the gap: a fork of its own signed
history, and its signed log said nothing, though the seal (signed by the key) proves
that 6 records had been written. The recovery record must state it."""

from __future__ import annotations

import json
from pathlib import Path

from ztproxy.audit.verify import verify_directory

from .test_recovery_laundering import recovery_records, restart_and_write, write_and_stop


def _roll_back_to(directory: Path, size: int) -> None:
    seg = directory / "w0-000001.jsonl"
    lines = seg.read_bytes().split(b"\n")[:-1]
    seg.write_bytes(b"".join(line + b"\n" for line in lines[:size]))
    cps = directory / "w0-checkpoints.jsonl"
    keep = [
        line
        for line in cps.read_bytes().split(b"\n")[:-1]
        if json.loads(line)["note"].split("\n")[1].isdigit()
        and int(json.loads(line)["note"].split("\n")[1]) <= size
    ]
    cps.write_bytes(b"".join(line + b"\n" for line in keep))


def test_rollback_below_the_seal_is_stated(tmp_path: Path, signer, public) -> None:
    write_and_stop(tmp_path, signer)  # records 0..5, checkpoints at 3 and 6
    _roll_back_to(tmp_path, 3)
    restart_and_write(tmp_path, signer)
    assert verify_directory(tmp_path, [public], workers=1).exit_code == 0
    (rec,) = recovery_records(tmp_path)
    assert rec["resumed_from_checkpoint"] == 3
    assert "6" in str(rec["sealed_missing"]), rec


def test_clean_restart_states_nothing(tmp_path: Path, signer, public) -> None:
    write_and_stop(tmp_path, signer)
    restart_and_write(tmp_path, signer)
    assert recovery_records(tmp_path) == []
    assert verify_directory(tmp_path, [public], workers=1).exit_code == 0
