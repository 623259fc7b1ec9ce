"""AuditLog as the pipeline uses it: never blocks, back-pressure, restart, torn tails."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from blockbuster import blockbuster_ctx

from ztproxy.audit import AuditLog
from ztproxy.audit.chain import ChainWriter, LockHeld
from ztproxy.audit.report import Kind
from ztproxy.audit.verify import verify_directory
from ztproxy.audit.writer import CheckpointPolicy
from ztproxy.metrics import Metrics

from .conftest import Clock, config, event


async def wait_for(predicate, seconds: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def failures(metrics: Metrics, reason: str) -> float:
    return (
        metrics.registry.get_sample_value("ztproxy_audit_failures_total", {"reason": reason}) or 0.0
    )


async def test_append_never_blocks_the_event_loop(tmp_path: Path, keydir: Path, public) -> None:
    log = AuditLog(config(tmp_path / "log", keydir, checkpoint_every_records=50))
    await log.start()
    with blockbuster_ctx("ztproxy"):
        for i in range(500):
            assert log.accepting()
            log.append(event(i))
            if i % 50 == 0:
                await asyncio.sleep(0)
        log.readiness()
        log.stats()
    await log.close()
    report = verify_directory(tmp_path / "log", [public])
    assert report.valid and report.chains[0].records == 500


async def test_close_signs_everything_and_restart_continues_the_chain(
    tmp_path: Path, keydir: Path, public
) -> None:
    cfg = config(tmp_path / "log", keydir)
    for round_ in range(3):
        log = AuditLog(cfg)
        await log.start()
        for i in range(7):
            log.append(event(round_ * 7 + i))
        await log.close()
        assert log.stats()["next_seq"] == 7 * (round_ + 1)
    report = verify_directory(tmp_path / "log", [public])
    assert report.valid, report.to_text()
    assert report.chains[0].records == report.chains[0].signed == 21
    assert [s.first_seq for s in report.chains[0].segments] == [0, 7, 14]


def test_second_writer_of_the_same_chain_is_locked_out(tmp_path: Path, signer) -> None:
    first = ChainWriter(tmp_path, 0, "t", signer, clock=Clock())
    first.open()
    with pytest.raises(LockHeld):
        ChainWriter(tmp_path, 0, "t", signer, clock=Clock()).open()
    ChainWriter(tmp_path, 1, "t", signer, clock=Clock()).open()  # another worker: its own
    first.close()


async def test_torn_last_line_is_a_torn_tail_and_the_chain_continues(
    tmp_path: Path, keydir: Path, public
) -> None:
    cfg = config(tmp_path / "log", keydir, checkpoint_every_records=3)
    log = AuditLog(cfg)
    await log.start()
    for i in range(5):
        log.append(event(i))
    await log.close()
    segment = tmp_path / "log" / "w0-000001.jsonl"
    whole = event(99).to_dict()
    with segment.open("ab") as fh:  # what a crash in the middle of a write leaves
        fh.write(json.dumps(whole).encode()[:57])
    crashed = verify_directory(tmp_path / "log", [public])
    assert crashed.valid  # the fragment was never a signed record
    torn = crashed.chains[0].segments[0].torn
    assert torn is not None and torn.kind is Kind.TORN_TAIL and torn.seq == 5
    assert "torn tail at seq 5" in crashed.to_text()

    log = AuditLog(cfg)
    await log.start()
    for i in range(5, 9):
        log.append(event(i))
    await log.close()
    report = verify_directory(tmp_path / "log", [public])
    assert report.valid and report.exit_code == 0, report.to_text()
    chain = report.chains[0]
    # The restart set the fragment aside (quarantine/, never deleted) and said so in a
    # signed record of kind "recovery" at seq 5; the four new records follow it.
    assert chain.records == chain.signed == 10
    assert chain.segments[0].torn is None and chain.segments[1].first_seq == 5
    moved = list((tmp_path / "log" / "quarantine").iterdir())
    assert len(moved) == 1 and moved[0].read_bytes() == json.dumps(whole).encode()[:57]
    first = json.loads((tmp_path / "log" / "w0-000002.jsonl").read_bytes().split(b"\n")[0])
    assert first["kind"] == "recovery" and first["seq"] == 5
    assert "incomplete last line" in first["set_aside"][0]


async def test_records_after_the_last_checkpoint_are_an_unsigned_tail(
    tmp_path: Path, signer, public
) -> None:
    chain = ChainWriter(tmp_path, 0, "t", signer, clock=Clock())
    chain.open()
    chain.write([event(i) for i in range(4)])
    chain.checkpoint()
    chain.write([event(i) for i in range(4, 6)])
    chain.close_quietly()  # a crash: no final checkpoint
    report = verify_directory(tmp_path, [public])
    assert report.status == "incomplete" and report.exit_code == 3
    (finding,) = [f for f in report.chains[0].findings if f.kind is Kind.UNSIGNED_TAIL]
    assert finding.seq == 4
    assert "UNSIGNED TAIL at seq 4" in report.to_text()


async def test_queue_full_refuses_in_deny_mode_and_recovers(tmp_path: Path, keydir: Path) -> None:
    metrics = Metrics()
    log = AuditLog(config(tmp_path / "log", keydir, queue_size=5), metrics=metrics)
    await log.start()
    assert log.accepting()
    for i in range(50):  # faster than the writer thread can be scheduled
        log.append(event(i))
    assert not log.accepting()
    assert log.readiness() == {"audit_accepting": False, "audit_healthy": False}
    assert failures(metrics, "queue_full") == 1
    await wait_for(log.accepting)
    await log.close()
    written, dropped = log.stats()["records_written"], log.stats()["dropped"]
    assert dropped > 0 and written + dropped == 50
    assert failures(metrics, "dropped") == dropped


async def test_queue_full_keeps_serving_in_allow_mode_but_shows_degraded(
    tmp_path: Path, keydir: Path
) -> None:
    log = AuditLog(config(tmp_path / "log", keydir, queue_size=5, on_failure="allow"))
    await log.start()
    for i in range(50):
        log.append(event(i))
    assert log.accepting()
    assert log.readiness() == {"audit_accepting": True, "audit_healthy": False}
    await log.close()


@pytest.mark.parametrize("mode", ["deny", "allow"])
async def test_unwritable_directory_refuses_or_degrades_until_writable(
    tmp_path: Path, keydir: Path, public, mode: str
) -> None:
    blocker = tmp_path / "audit"
    blocker.write_text("a file where the log directory should be")
    metrics = Metrics()
    log = AuditLog(config(blocker / "log", keydir, on_failure=mode), metrics=metrics)
    await log.start()
    assert log.accepting() is (mode == "allow")
    assert log.readiness()["audit_healthy"] is False
    assert failures(metrics, "write_failed") == 1
    log.append(event(0))  # a request already in flight still gets its record
    blocker.unlink()  # the operator fixes the disk
    await wait_for(lambda: log.readiness()["audit_healthy"], seconds=5)
    assert log.accepting()
    log.append(event(1))
    await log.close()
    report = verify_directory(blocker / "log", [public])
    assert report.valid and report.chains[0].records == 2


async def test_checkpoints_on_interval_and_heartbeat_when_idle(
    tmp_path: Path, keydir: Path, public
) -> None:
    log = AuditLog(
        config(tmp_path / "log", keydir, checkpoint_interval_seconds=0.05, heartbeat_seconds=0.2)
    )
    await log.start()
    log.append(event(0))
    await wait_for(lambda: log.stats()["checkpoints"] >= 1)
    await wait_for(lambda: log.stats()["checkpoints"] >= 3, seconds=3)  # idle heartbeats
    await log.close()
    lines = (tmp_path / "log" / "w0-checkpoints.jsonl").read_text().splitlines()
    notes = [json.loads(line)["note"] for line in lines]
    # size 0 signed at the chain's start, then size 1, and heartbeats: same size, new time
    assert [n.split("\n")[1] for n in notes] == ["0"] + ["1"] * (len(notes) - 1)
    assert len({n.split("\n")[5] for n in notes}) == len(notes)
    assert verify_directory(tmp_path / "log", [public]).valid


def test_checkpoint_policy() -> None:
    policy = CheckpointPolicy(every_records=10, interval=5.0, heartbeat=60.0)
    assert policy.due(now=0.0, unsigned=10, last=0.0)
    assert not policy.due(now=4.9, unsigned=9, last=0.0)
    assert policy.due(now=5.0, unsigned=1, last=0.0)
    assert not policy.due(now=59.0, unsigned=0, last=0.0)
    assert policy.due(now=60.0, unsigned=0, last=0.0)
    assert policy.wait(now=2.0, unsigned=1, last=0.0) == 1.0  # capped at one second
    assert policy.wait(now=4.5, unsigned=1, last=0.0) == 0.5


def test_segments_rotate_by_size_and_by_age(tmp_path: Path, signer, public) -> None:
    clock = Clock()
    chain = ChainWriter(
        tmp_path, 0, "t", signer, clock=clock, segment_max_bytes=2000, segment_max_age=60
    )
    chain.open()
    chain.write([event(0)])
    assert not chain.rotation_due()
    clock.advance(60)
    assert chain.rotation_due()
    chain.rotate()
    chain.write([event(1), event(2), event(3)])
    assert chain.rotation_due()  # over 2000 bytes
    chain.rotate()
    assert not chain.rotation_due()  # an empty segment never rotates
    chain.close()
    report = verify_directory(tmp_path, [public])
    assert report.valid
    assert [s.records for s in report.chains[0].segments] == [1, 3, 0]


def test_records_hold_only_the_event_fields_and_chain_fields(tmp_path: Path, signer) -> None:
    chain = ChainWriter(tmp_path, 4, "t", signer, clock=Clock())
    chain.open()
    chain.write([event(1)])
    chain.close()
    record = json.loads((tmp_path / "w4-000001.jsonl").read_bytes())
    assert set(record) == set(event(1).to_dict()) | {"seq", "prev", "hash", "worker"}
    assert record["worker"] == 4 and record["seq"] == 0
    assert not any(isinstance(v, float) for v in record.values())


def test_each_worker_has_its_own_chain_and_verify_checks_all(
    tmp_path: Path, signer, public
) -> None:
    from .conftest import write_log

    for worker in (0, 1, 2):
        write_log(tmp_path, signer, [event(i) for i in range(6)], worker=worker)
    report = verify_directory(tmp_path, [public])
    assert report.valid and [c.worker for c in report.chains] == [0, 1, 2]
    assert {c.origin for c in report.chains} == {"test/w0", "test/w1", "test/w2"}
    damaged = tmp_path / "w1-000002.jsonl"
    damaged.write_bytes(damaged.read_bytes().replace(b'"latency_us":105', b'"latency_us":1', 1))
    report = verify_directory(tmp_path, [public])
    assert [c.status for c in report.chains] == ["valid", "invalid", "valid"]
    # a segment moved into another worker's chain does not belong there
    (tmp_path / "w2-000002.jsonl").write_bytes((tmp_path / "w0-000002.jsonl").read_bytes())
    assert verify_directory(tmp_path, [public]).chains[2].status == "invalid"
