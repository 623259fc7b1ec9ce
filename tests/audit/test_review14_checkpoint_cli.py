"""Review of issue 14: `ztproxy audit checkpoint --worker 0` (the documented way to
get a checkpoint to keep) took the largest checkpoint a given key signed in w0's
checkpoints file, whatever chain it was for: w1's larger checkpoint placed in w0's
file was handed out as w0's, so the auditor kept a checkpoint that protects w0 from
nothing (verify --trusted-checkpoint then checks w1)."""

from __future__ import annotations

from pathlib import Path

from ztproxy.audit.note import parse_signed_checkpoint

from .conftest import event, run_cli, write_log


def test_checkpoint_of_another_chain_is_not_handed_out(
    tmp_path: Path, signer, keydir: Path
) -> None:
    write_log(
        tmp_path,
        signer,
        [event(i) for i in range(4)],
        checkpoint_every=2,
        per_segment=100,
        worker=0,
    )
    write_log(
        tmp_path,
        signer,
        [event(i) for i in range(12)],
        checkpoint_every=4,
        per_segment=100,
        worker=1,
    )
    w0 = tmp_path / "w0-checkpoints.jsonl"
    foreign = (tmp_path / "w1-checkpoints.jsonl").read_bytes().split(b"\n")[-2]
    w0.write_bytes(w0.read_bytes() + foreign + b"\n")
    code, out, _ = run_cli(
        ["checkpoint", str(tmp_path), "--worker", "0", "--key", str(keydir / "audit-public.pem")]
    )
    assert code == 0
    cp = parse_signed_checkpoint(out).checkpoint
    assert cp.worker == 0 and cp.size == 4, cp.origin
