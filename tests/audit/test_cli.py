"""The auditor's commands, through the real argparse wiring of `ztproxy audit`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ztproxy.audit.keys import load_public_key, load_signing_key

from .conftest import Clock, event, run_cli, write_log


def make_log(tmp_path: Path, keydir: Path, n: int = 12) -> Path:
    directory = tmp_path / "log"
    write_log(
        directory,
        load_signing_key(keydir / "audit-private.pem"),
        [event(i) for i in range(n)],
        checkpoint_every=4,
        per_segment=5,
    )
    return directory


def test_keygen_writes_a_pair_and_refuses_to_overwrite(tmp_path: Path) -> None:
    code, out, _ = run_cli(["keygen", "--out", str(tmp_path / "k")])
    assert code == 0 and "key id:" in out and "vkey:" in out
    assert (tmp_path / "k" / "audit-private.pem").stat().st_mode & 0o077 == 0
    code, _, err = run_cli(["keygen", "--out", str(tmp_path / "k")])
    assert code == 1 and "already there" in err
    assert run_cli(["keygen", "--out", str(tmp_path / "k"), "--force"])[0] == 0


def test_verify_text_json_and_exit_codes(tmp_path: Path, keydir: Path, other_keydir: Path) -> None:
    directory = make_log(tmp_path, keydir)
    pub = str(keydir / "audit-public.pem")
    code, out, _ = run_cli(["verify", str(directory), "--key", pub])
    assert code == 0
    assert out.splitlines() == [
        "w0-000001.jsonl  valid  seq 0-4 (5 records)",
        "w0-000002.jsonl  valid  seq 5-9 (5 records)",
        "w0-000003.jsonl  valid  seq 10-11 (2 records)",
        "summary: VALID: 1 chain(s), 3 segment(s), 12 record(s)",
    ]
    code, out, _ = run_cli(["verify", str(directory), "--key", pub, "--json"])
    doc = json.loads(out)
    assert code == 0 and doc["status"] == "valid" and doc["chains"][0]["signed"] == 12

    segment = directory / "w0-000002.jsonl"
    segment.write_bytes(segment.read_bytes().replace(b'"decision":"deny"', b'"decision":"allo"', 1))
    code, out, _ = run_cli(["verify", str(directory), "--key", pub])
    assert code == 1
    assert out.splitlines()[1].startswith("w0-000002.jsonl  INVALID: modified at seq 6")
    assert out.splitlines()[2].startswith("w0-000003.jsonl  unverified")
    code, out, _ = run_cli(
        ["verify", str(directory), "--key", str(other_keydir / "audit-public.pem")]
    )
    assert code == 1 and "INVALID: unknown key" in out and "UNSIGNED" not in out
    assert run_cli(["verify", str(tmp_path / "nowhere"), "--key", pub])[0] == 1
    assert run_cli(["verify", str(directory), "--key", str(tmp_path / "nokey.pem")])[0] == 1


def test_verify_accepts_several_keys_after_rotation(
    tmp_path: Path, keydir: Path, other_keydir: Path
) -> None:
    directory = make_log(tmp_path, keydir, n=6)
    write_log(
        directory,
        load_signing_key(other_keydir / "audit-private.pem"),
        [event(i) for i in range(6, 9)],
        clock=Clock(),  # restarted with a new key
        previous_keys=(load_public_key(keydir / "audit-public.pem"),),
    )
    old, new = str(keydir / "audit-public.pem"), str(other_keydir / "audit-public.pem")
    assert run_cli(["verify", str(directory), "--key", old])[0] == 1
    code, out, _ = run_cli(["verify", str(directory), "--key", old, "--key", new])
    assert code == 0, out


def test_show_filters_and_says_what_was_verified(tmp_path: Path, keydir: Path) -> None:
    directory = make_log(tmp_path, keydir)
    code, out, _ = run_cli(["show", str(directory), "--decision", "deny"])
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("time")
    assert len(lines) == 2 + 4  # header, the deny records 0, 3, 6, 9, statement
    assert lines[-1].startswith("NOT VERIFIED: 4 record(s)")
    code, out, err = run_cli(
        [
            "show",
            str(directory),
            "--json",
            "--key",
            str(keydir / "audit-public.pem"),
            "--user",
            "user1@corp.example",
            "--service",
            "payments",
        ]
    )
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["seq"] for r in rows] == [1, 11] and all(r["verified"] for r in rows)
    assert err.startswith("2 of 2 record(s) shown are verified")
    code, out, _ = run_cli(
        [
            "show",
            str(directory),
            "--json",
            "--request-id",
            "req-000005",
            "--since",
            "2026-11-28T01:02:05Z",
            "--until",
            "2026-11-28T01:03Z",
        ]
    )
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [5]
    assert (
        run_cli(
            ["show", str(directory), "--json", "--since", "2026-11-28T01:02:06Z", "--limit", "2"]
        )[1].count("\n")
        == 2
    )


def test_inclusion_proof_round_trip_without_the_log(
    tmp_path: Path, keydir: Path, other_keydir: Path
) -> None:
    directory = make_log(tmp_path, keydir)
    proof = tmp_path / "proof.json"
    assert run_cli(["proof", str(directory), "--seq", "7", "--out", str(proof)])[0] == 0
    shutil.rmtree(directory)  # the third party never sees the log
    pub = str(keydir / "audit-public.pem")
    code, out, _ = run_cli(["verify-proof", str(proof), "--key", pub])
    assert code == 0 and out.startswith("valid: record seq 7 is in test/w0 at tree size 12")
    bundle = json.loads(proof.read_text())
    bundle["record"] = bundle["record"].replace('"status":200', '"status":201')
    proof.write_text(json.dumps(bundle))
    code, out, _ = run_cli(["verify-proof", str(proof), "--key", pub])
    assert code == 1 and out.startswith("INVALID: record does not match its hash")
    bundle = json.loads((tmp_path / "proof.json").read_text())
    code, out, _ = run_cli(
        ["verify-proof", str(proof), "--key", str(other_keydir / "audit-public.pem")]
    )
    assert code == 1 and "unknown key" in out


def test_trusted_checkpoint_detects_rollback_and_proves_consistency(
    tmp_path: Path, keydir: Path
) -> None:
    directory = make_log(tmp_path, keydir, n=8)
    pub = str(keydir / "audit-public.pem")
    kept = tmp_path / "kept.note"
    assert run_cli(["checkpoint", str(directory), "--key", pub, "--out", str(kept)])[0] == 0
    backup = tmp_path / "backup"
    shutil.copytree(directory, backup)
    write_log(
        directory,
        load_signing_key(keydir / "audit-private.pem"),
        [event(i) for i in range(8, 14)],
        clock=Clock(),
    )
    code, out, _ = run_cli(
        ["verify", str(directory), "--key", pub, "--trusted-checkpoint", str(kept)]
    )
    assert code == 0, out
    bundle = tmp_path / "consistency.json"
    assert (
        run_cli(
            [
                "proof",
                str(directory),
                "--consistency",
                "--trusted-checkpoint",
                str(kept),
                "--out",
                str(bundle),
            ]
        )[0]
        == 0
    )
    code, out, _ = run_cli(["verify-proof", str(bundle), "--key", pub])
    assert code == 0 and "at size 14" in out and "extends size 8" in out

    # Later the operator rolls the log back to an earlier copy: whole on its own ...
    newer = tmp_path / "newer.note"
    run_cli(["checkpoint", str(directory), "--key", pub, "--out", str(newer)])
    shutil.rmtree(directory)
    shutil.copytree(backup, directory)
    assert run_cli(["verify", str(directory), "--key", pub])[0] == 0
    # ... but not to an auditor who kept a later checkpoint.
    code, out, _ = run_cli(
        ["verify", str(directory), "--key", pub, "--trusted-checkpoint", str(newer)]
    )
    assert code == 1 and "INVALID: truncated at seq 8" in out and "rolled back" in out
