"""Review of issue 14: attacks found sound, pinned (each test fails if the guard
it names goes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ztproxy.audit.chain import ChainWriter
from ztproxy.audit.recovery import seal_line, seal_message
from ztproxy.audit.verify import verify_directory

from .conftest import Clock, event
from .test_recovery_laundering import (
    assert_set_aside_and_signed,
    forged_line,
    recovery_records,
    restart_and_write,
    write_and_stop,
)


def test_forged_recovery_record_in_the_tail_is_set_aside(tmp_path: Path, signer, public) -> None:
    write_and_stop(tmp_path, signer)
    planted = forged_line(tmp_path, kind="recovery", reason="recovery_set_aside")
    with (tmp_path / "w0-000001.jsonl").open("ab") as fh:
        fh.write(planted)
    restart_and_write(tmp_path, signer)
    assert_set_aside_and_signed(tmp_path, public, planted)


def test_an_older_seal_replayed_bounds_what_is_adopted(tmp_path: Path, signer, public) -> None:
    """A crash tail: records 3..5 unsigned but the writer's. The seal saved after
    record 3 put back: records 4 and 5 are no longer proven the writer's, so they are
    set aside (stated), never adopted on the older seal's word beyond what it names."""
    chain = ChainWriter(tmp_path, 0, "test", signer, clock=Clock(), fsync="never")
    chain.open()
    old_seal = tmp_path / "old.seal"
    for i in range(6):
        chain.write([event(i)])
        if i == 2:
            chain.checkpoint()
        if i == 3:
            shutil.copy(tmp_path / "w0.seal", old_seal)
    chain.close_quietly()
    shutil.copy(old_seal, tmp_path / "w0.seal")
    old_seal.unlink()
    restart_and_write(tmp_path, signer)
    (rec,) = recovery_records(tmp_path)
    assert rec["adopted_records"] == 1 and rec["set_aside"], rec
    assert verify_directory(tmp_path, [public], workers=1).exit_code == 0


def test_seal_signed_for_another_origin_adopts_nothing(tmp_path: Path, signer, public) -> None:
    """A seal the key signed for w1 (same key), naming w0's forged record exactly:
    the seal binds the origin, so the forged record is not adopted (signed for
    "test/w0" instead, the same seal adopts it: checked by hand, the test fails)."""
    write_and_stop(tmp_path, signer)
    planted = forged_line(tmp_path)
    with (tmp_path / "w0-000001.jsonl").open("ab") as fh:
        fh.write(planted)
    forged = json.loads(planted)
    size, head = forged["seq"] + 1, forged["hash"]
    signature = signer.sign(seal_message("test/w1", size, head))
    (tmp_path / "w0.seal").write_bytes(seal_line("test/w1", size, head, signature))
    restart_and_write(tmp_path, signer)
    assert_set_aside_and_signed(tmp_path, public, planted)
