"""Finding 1 (laundering) and 4 (fsync after restart): a restarted writer verifies
the tail after its last verified checkpoint and signs nothing it did not write.

Every case: a log written and stopped, something planted in the directory by someone
without the key, a restart that writes ten real records, then `verify`. The old code
signed the planted record over (verify VALID, the forged record "verified").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ztproxy.audit import AuditLog, RecoveryRefused
from ztproxy.audit import recovery as recovery_mod
from ztproxy.audit.chain import ChainWriter
from ztproxy.audit.keys import SigningKey
from ztproxy.audit.record import build_from_fields
from ztproxy.audit.verify import verify_directory

from .conftest import Clock, config, event

FORGED_ID = "req-forged"


def _writer(directory: Path, key: SigningKey, **kw: object) -> ChainWriter:
    return ChainWriter(directory, 0, "test", key, clock=Clock(), fsync="never", **kw)  # type: ignore[arg-type]


def write_and_stop(
    directory: Path, key: SigningKey, n: int = 6, *, clean: bool = True
) -> ChainWriter:
    chain = _writer(directory, key)
    chain.open()
    for i in range(n):
        chain.write([event(i)])
        if i == 2:
            chain.checkpoint()
    if clean:
        chain.close()
    else:
        chain.close_quietly()  # a crash: no final checkpoint
    return chain


def last_record(directory: Path) -> dict[str, object]:
    segments = sorted(directory.glob("w0-0*.jsonl"))
    lines = [ln for p in segments for ln in p.read_bytes().split(b"\n") if ln]
    for line in reversed(lines):  # the last real-looking record (planted junk skipped)
        try:
            obj: dict[str, object] = json.loads(line)
        except ValueError:
            continue
        if "seq" in obj and "hash" in obj:
            return obj
    raise AssertionError("no record")


def forged_line(directory: Path, **changes: object) -> bytes:
    """The next record, well made: next seq, prev = the head, a true hash, canonical."""
    last = last_record(directory)
    fields = event(99, request_id=FORGED_ID).to_dict()
    fields.update(seq=last["seq"] + 1, prev=last["hash"], worker=0)  # type: ignore[operator]
    fields.update(changes)
    return build_from_fields(fields).line


def restart_and_write(directory: Path, key: SigningKey, n: int = 10, **kw: object) -> ChainWriter:
    chain = _writer(directory, key, **kw)
    chain.open()
    for i in range(100, 100 + n):
        chain.write([event(i)])
    chain.close()
    return chain


def chain_ids(directory: Path) -> list[str]:
    out = []
    for path in sorted(directory.glob("w0-0*.jsonl")):
        for line in path.read_bytes().split(b"\n"):
            if line:
                out.append(str(json.loads(line).get("request_id", "")))
    return out


def recovery_records(directory: Path) -> list[dict[str, object]]:
    out = []
    for path in sorted(directory.glob("w0-0*.jsonl")):
        for line in path.read_bytes().split(b"\n"):
            if line and json.loads(line)["kind"] == "recovery":
                out.append(json.loads(line))
    return out


def assert_set_aside_and_signed(directory: Path, public, planted: bytes) -> None:  # type: ignore[no-untyped-def]
    report = verify_directory(directory, [public])
    assert report.valid and report.exit_code == 0, report.to_text()
    assert FORGED_ID not in chain_ids(directory)
    moved = list((directory / "quarantine").iterdir())
    assert any(planted in p.read_bytes() for p in moved), "set aside, never deleted"
    (rec,) = recovery_records(directory)
    assert rec["set_aside"] and "sha256:" in rec["set_aside"][0]  # type: ignore[index]
    chain = report.chains[0]
    assert chain.records == chain.signed


def test_forged_next_seq_record_after_clean_stop_is_set_aside(
    tmp_path: Path, signer, public
) -> None:
    write_and_stop(tmp_path, signer)
    planted = forged_line(tmp_path)
    with (tmp_path / "w0-000001.jsonl").open("ab") as fh:
        fh.write(planted)
    assert verify_directory(tmp_path, [public]).exit_code == 3  # an unsigned tail
    restart_and_write(tmp_path, signer)
    assert_set_aside_and_signed(tmp_path, public, planted)


def test_forged_next_seq_record_after_a_crash_is_set_aside_real_tail_kept(
    tmp_path: Path, signer, public
) -> None:
    write_and_stop(tmp_path, signer, clean=False)  # records 3..5 unsigned, but ours
    planted = forged_line(tmp_path)
    with (tmp_path / "w0-000001.jsonl").open("ab") as fh:
        fh.write(planted)
    restart_and_write(tmp_path, signer)
    assert_set_aside_and_signed(tmp_path, public, planted)
    ids = chain_ids(tmp_path)
    assert ids[:6] == [f"req-{i:06d}" for i in range(6)]  # the real crash tail adopted


def test_non_chaining_record_is_set_aside(tmp_path: Path, signer, public) -> None:
    write_and_stop(tmp_path, signer)
    planted = forged_line(tmp_path, prev="ab" * 32)
    with (tmp_path / "w0-000001.jsonl").open("ab") as fh:
        fh.write(planted)
    restart_and_write(tmp_path, signer)
    assert_set_aside_and_signed(tmp_path, public, planted)


def test_record_with_wrong_hash_is_set_aside(tmp_path: Path, signer, public) -> None:
    write_and_stop(tmp_path, signer)
    good = forged_line(tmp_path)
    at = good.index(b'"hash":"') + 8
    planted = good[:at] + (b"0" if good[at : at + 1] != b"0" else b"1") + good[at + 1 :]
    with (tmp_path / "w0-000001.jsonl").open("ab") as fh:
        fh.write(planted)
    restart_and_write(tmp_path, signer)
    assert_set_aside_and_signed(tmp_path, public, planted)


def test_record_in_a_new_segment_file_is_set_aside(tmp_path: Path, signer, public) -> None:
    write_and_stop(tmp_path, signer)
    planted = forged_line(tmp_path)
    (tmp_path / "w0-000002.jsonl").write_bytes(planted)
    restart_and_write(tmp_path, signer)
    assert_set_aside_and_signed(tmp_path, public, planted)
    assert not (tmp_path / "w0-000002.jsonl").read_bytes().startswith(planted)


def _fake_checkpoint(directory: Path) -> bytes:
    path = directory / "w0-checkpoints.jsonl"
    entry = json.loads(path.read_bytes().split(b"\n")[-2])
    text, _, sig = entry["note"].rpartition("\u2014 ")
    entry["note"] = text + "\u2014 " + sig.replace(sig[10:14], "AAAA")  # no key: a bad sig
    return json.dumps(entry).encode() + b"\n"


def test_unsigned_fake_checkpoint_refuses_start_then_is_set_aside_when_accepted(
    tmp_path: Path, signer, public
) -> None:
    write_and_stop(tmp_path, signer)
    planted = _fake_checkpoint(tmp_path)
    with (tmp_path / "w0-checkpoints.jsonl").open("ab") as fh:
        fh.write(planted)
    with pytest.raises(RecoveryRefused) as refused:
        _writer(tmp_path, signer).open()
    message = str(refused.value)
    assert "\n" not in message and "--accept-recovery" in message
    restart_and_write(tmp_path, signer, accept_recovery=True)
    report = verify_directory(tmp_path, [public])
    assert report.valid, report.to_text()
    (rec,) = recovery_records(tmp_path)
    assert rec["accept_recovery"] is True and "does not verify" in str(rec["accepted"])
    assert any(planted in p.read_bytes() for p in (tmp_path / "quarantine").iterdir())


def test_deleted_checkpoints_file_refuses_start(tmp_path: Path, signer, public) -> None:
    write_and_stop(tmp_path, signer)
    (tmp_path / "w0-checkpoints.jsonl").unlink()
    with pytest.raises(RecoveryRefused, match="no checkpoint verifies"):
        _writer(tmp_path, signer).open()


def test_checkpoint_by_another_key_refuses_start(tmp_path: Path, signer, other_signer) -> None:
    write_and_stop(tmp_path, other_signer)
    with pytest.raises(RecoveryRefused, match="does not verify under the configured key"):
        _writer(tmp_path, signer).open()


async def test_audit_log_start_refuses_in_one_line(
    tmp_path: Path, keydir: Path, other_signer
) -> None:
    write_and_stop(tmp_path / "log", other_signer)
    log = AuditLog(config(tmp_path / "log", keydir, origin="test"))
    with pytest.raises(RecoveryRefused) as refused:
        await log.start()
    assert "\n" not in str(refused.value)
    accepted = AuditLog(config(tmp_path / "log", keydir, origin="test", accept_recovery=True))
    await accepted.start()
    accepted.append(event(1))
    await accepted.close()
    (rec,) = recovery_records(tmp_path / "log")
    assert rec["accept_recovery"] is True


def test_restart_fsyncs_the_segment_holding_recovered_records(
    tmp_path: Path, signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_and_stop(tmp_path, signer, clean=False)
    synced: list[str] = []
    real = recovery_mod._fsync

    def spy(path: Path) -> None:
        synced.append(path.name)
        real(path)

    monkeypatch.setattr(recovery_mod, "_fsync", spy)
    chain = _writer(tmp_path, signer)
    chain.open()
    assert chain.recovered is not None and chain.recovered.adopted == 3
    assert "w0-000001.jsonl" in synced  # before the checkpoint that covers them
    chain.close()


def test_checkpoint_entry_naming_no_segment_sets_nothing_aside(
    tmp_path: Path, signer, public
) -> None:
    """A checkpoint signed while no segment was open (after a write error) names none;
    the restart finds its last record anyway and keeps the signed log whole."""
    write_and_stop(tmp_path, signer)
    path = tmp_path / "w0-checkpoints.jsonl"
    entries = [json.loads(e) for e in path.read_bytes().split(b"\n")[:-1]]
    entries[-1]["segment"] = ""
    path.write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in entries))
    restart_and_write(tmp_path, signer)
    assert not (tmp_path / "quarantine").exists()
    report = verify_directory(tmp_path, [public])
    assert report.valid and report.chains[0].records == 16, report.to_text()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    plants=st.lists(
        st.sampled_from(["forged", "forged-bad-prev", "copy", "junk", "torn", "new-segment"]),
        min_size=1,
        max_size=4,
    ),
    clean=st.booleans(),
)
def test_nothing_planted_is_ever_signed(
    tmp_path_factory,
    signer,
    public,  # type: ignore[no-untyped-def]
    plants: list[str],
    clean: bool,
) -> None:
    directory = tmp_path_factory.mktemp("plant")
    write_and_stop(directory, signer, clean=clean)
    segment = directory / "w0-000001.jsonl"
    for plant in plants:
        if plant == "forged":
            data = forged_line(directory)
        elif plant == "forged-bad-prev":
            data = forged_line(directory, prev="cd" * 32)
        elif plant == "copy":
            data = segment.read_bytes().split(b"\n")[1] + b"\n"
        elif plant == "junk":
            data = b'{"request_id":"req-forged"}\n'
        elif plant == "torn":
            data = forged_line(directory)[:40]
        else:
            (directory / "w0-000007.jsonl").write_bytes(forged_line(directory))
            continue
        with segment.open("ab") as fh:
            fh.write(data)
    restart_and_write(directory, signer)
    report = verify_directory(directory, [public])
    assert report.valid, report.to_text()
    assert FORGED_ID not in chain_ids(directory)
    ids = chain_ids(directory)
    assert ids[:6] == [f"req-{i:06d}" for i in range(6)]  # ours, crash tail included
