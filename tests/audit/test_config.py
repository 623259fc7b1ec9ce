"""The audit config section: defaults, key paths in problems, the key is checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from ztproxy.config.audit import AuditConfig, parse_audit
from ztproxy.config.reader import Node, Problems


def parse(value: object, base: Path) -> tuple[AuditConfig, list[str]]:
    problems = Problems()
    root = Node({"audit": value} if value is not None else {}, "", problems, str(base))
    cfg = parse_audit(root.section("audit"))
    return cfg, problems.items


def test_defaults_and_relative_paths(tmp_path: Path, keydir: Path) -> None:
    cfg, problems = parse({"signing_key": str(keydir / "audit-private.pem")}, tmp_path)
    assert problems == []
    assert cfg.dir == str(tmp_path / "audit-log")
    assert (
        cfg.origin,
        cfg.checkpoint_every_records,
        cfg.checkpoint_interval_seconds,
        cfg.heartbeat_seconds,
        cfg.segment_max_bytes,
        cfg.segment_max_age_seconds,
        cfg.queue_size,
        cfg.flush_interval_ms,
        cfg.fsync,
        cfg.on_failure,
    ) == ("ztproxy", 1000, 10.0, 60.0, 64 * 1024 * 1024, 3600.0, 10000, 50.0, "checkpoint", "deny")


def test_absent_section_asks_for_the_signing_key(tmp_path: Path) -> None:
    _, problems = parse(None, tmp_path)
    assert problems == ["audit.signing_key: is required"]


def test_every_problem_is_named_by_its_key_path(tmp_path: Path, keydir: Path) -> None:
    _, problems = parse(
        {
            "signing_key": str(keydir / "audit-private.pem"),
            "fsync": "sometimes",
            "on_failure": "ignore",
            "queue_size": 0,
            "origin": "has space",
            "heartbeat_seconds": "soon",
            "dri": "x",
            "flush_interval_ms": 5000,
        },
        tmp_path,
    )
    keys = sorted(p.split(":")[0] for p in problems)
    assert keys == [
        "audit.dri",
        "audit.flush_interval_ms",
        "audit.fsync",
        "audit.heartbeat_seconds",
        "audit.on_failure",
        "audit.origin",
        "audit.queue_size",
    ]


def test_signing_key_must_exist_and_be_ed25519(tmp_path: Path) -> None:
    _, problems = parse({"signing_key": "missing.pem"}, tmp_path)
    assert problems == ["audit.signing_key: file not found: missing.pem"]
    ec = tmp_path / "ec.pem"
    ec.write_bytes(
        generate_private_key(SECP256R1()).private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
    )
    _, problems = parse({"signing_key": "ec.pem"}, tmp_path)
    assert problems == [
        "audit.signing_key: must be an Ed25519 private key (see `ztproxy audit keygen`)"
    ]


def test_dataclass_refuses_nonsense_when_built_in_code(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        AuditConfig(dir=str(tmp_path), signing_key="k", fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AuditConfig(dir=str(tmp_path), signing_key="k", origin="a+b")
