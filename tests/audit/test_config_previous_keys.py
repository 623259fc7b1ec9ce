"""audit.previous_keys: rotated-out public keys, resolved against the config file."""

from __future__ import annotations

from pathlib import Path

from .test_config import parse


def test_previous_keys_are_paths_and_a_missing_one_is_named(tmp_path: Path, keydir: Path) -> None:
    (tmp_path / "old.pem").write_bytes((keydir / "audit-public.pem").read_bytes())
    cfg, problems = parse(
        {"signing_key": str(keydir / "audit-private.pem"), "previous_keys": ["old.pem"]}, tmp_path
    )
    assert problems == [] and cfg.previous_keys == (str(tmp_path / "old.pem"),)
    _, problems = parse(
        {
            "signing_key": str(keydir / "audit-private.pem"),
            "previous_keys": ["old.pem", "gone.pem"],
        },
        tmp_path,
    )
    assert problems == ["audit.previous_keys[1]: file not found: gone.pem"]


async def test_rotated_key_restart_continues_the_chain(
    tmp_path: Path, keydir: Path, other_keydir: Path
) -> None:
    from ztproxy.audit import AuditLog
    from ztproxy.audit.keys import load_public_key
    from ztproxy.audit.verify import verify_directory

    from .conftest import config, event

    log = AuditLog(config(tmp_path / "log", keydir))
    await log.start()
    log.append(event(0))
    await log.close()
    rotated = config(
        tmp_path / "log", other_keydir, previous_keys=(str(keydir / "audit-public.pem"),)
    )
    log = AuditLog(rotated)
    await log.start()
    log.append(event(1))
    await log.close()
    keys = [load_public_key(d / "audit-public.pem") for d in (keydir, other_keydir)]
    report = verify_directory(tmp_path / "log", keys)
    assert report.valid and report.chains[0].records == 2, report.to_text()
    assert not (tmp_path / "log" / "quarantine").exists()
