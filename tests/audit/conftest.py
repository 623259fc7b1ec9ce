"""Fixtures for the audit tests: real Ed25519 keys, real files, a hand-driven clock."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import types
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
from hypothesis import strategies as st

from ztproxy.audit.chain import ChainWriter
from ztproxy.audit.keys import (
    PublicKey,
    SigningKey,
    generate_keypair,
    load_public_key,
    load_signing_key,
)
from ztproxy.config.audit import AuditConfig
from ztproxy.model import AuditEvent

REPO = Path(__file__).resolve().parents[2]


class Clock:
    """A clock the test moves by hand (starts at 2026-11-28T00:00:00Z)."""

    def __init__(self, now: float = 1_795_824_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def event(i: int = 0, **overrides: object) -> AuditEvent:
    fields: dict[str, object] = dict(
        kind="request",
        time=f"2026-11-28T01:02:{i % 60:02d}.{i % 1000:03d}Z",
        request_id=f"req-{i:06d}",
        source_address="127.0.0.1",
        reason="allowed" if i % 3 else "policy_denied",
        decision="allow" if i % 3 else "deny",
        status=200 if i % 3 else 403,
        latency_us=100 + i,
        source_spiffe_id="spiffe://corp.example/ns/prod/sa/checkout",
        source_cert_sha256="ab" * 32,
        user_issuer="https://idp.corp.example",
        user_subject=f"user{i % 5}@corp.example",
        device_id=f"dev-{i % 7}",
        method="GET",
        host="payments.internal",
        path=f"/api/v1/charges/{i}",
        destination_service="payments" if i % 2 else "ledger",
        route="api",
        policy_revision="rev-1",
        policy_input_sha256="cd" * 32,
        policy_reasons=("ok",),
    )
    fields.update(overrides)
    return AuditEvent(**fields)  # type: ignore[arg-type]


_text = st.text(max_size=30)
_opt = st.none() | _text
_int = st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)


@st.composite
def events(draw: st.DrawFn) -> AuditEvent:
    """Any AuditEvent the model allows: arbitrary Unicode strings, safe integers."""
    return AuditEvent(
        kind=draw(st.sampled_from(["request", "tls_rejected"])),
        time=draw(_text),
        request_id=draw(_text),
        source_address=draw(_text),
        reason=draw(_text),
        decision=draw(st.sampled_from(["allow", "deny"])),
        status=draw(_int),
        latency_us=draw(_int),
        source_spiffe_id=draw(_opt),
        source_cert_sha256=draw(_opt),
        user_issuer=draw(_opt),
        user_subject=draw(_opt),
        device_id=draw(_opt),
        method=draw(_opt),
        host=draw(_opt),
        path=draw(_opt),
        destination_service=draw(_opt),
        route=draw(_opt),
        policy_revision=draw(_opt),
        policy_input_sha256=draw(_opt),
        policy_reasons=tuple(draw(st.lists(_text, max_size=3))),
    )


@pytest.fixture(scope="session")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("keys")
    generate_keypair(out)
    return out


@pytest.fixture(scope="session")
def signer(keydir: Path) -> SigningKey:
    return load_signing_key(keydir / "audit-private.pem")


@pytest.fixture(scope="session")
def other_keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("other-keys")
    generate_keypair(out)
    return out


@pytest.fixture(scope="session")
def other_signer(other_keydir: Path) -> SigningKey:
    return load_signing_key(other_keydir / "audit-private.pem")


@pytest.fixture(scope="session")
def public(keydir: Path):  # type: ignore[no-untyped-def]
    return load_public_key(keydir / "audit-public.pem")


def config(directory: Path, keydir: Path, **overrides: object) -> AuditConfig:
    values: dict[str, object] = dict(
        dir=str(directory), signing_key=str(keydir / "audit-private.pem")
    )
    values.update(overrides)
    return AuditConfig(**values)  # type: ignore[arg-type]


def write_log(
    directory: Path,
    key: SigningKey,
    evs: Sequence[AuditEvent],
    *,
    checkpoint_every: int = 4,
    per_segment: int = 5,
    worker: int = 0,
    clock: Clock | None = None,
    fsync: str = "never",
    previous_keys: tuple[PublicKey, ...] = (),
) -> ChainWriter:
    """A closed log written synchronously: a checkpoint every `checkpoint_every`
    records, a new segment every `per_segment` records, and a final checkpoint."""
    chain = ChainWriter(
        directory,
        worker,
        "test",
        key,
        clock=clock or Clock(),
        fsync=fsync,
        previous_keys=previous_keys,
    )
    chain.open()
    for i, ev in enumerate(evs, 1):
        chain.write([ev])
        if i % checkpoint_every == 0:
            chain.checkpoint()
        if i % per_segment == 0 and i < len(evs):
            chain.rotate()
    chain.close()
    return chain


def load_cli() -> types.ModuleType:
    """ztproxy.cli.audit, even while sibling CLI modules (other helpers') are missing."""
    try:
        return importlib.import_module("ztproxy.cli.audit")
    except ImportError:
        spec = importlib.util.spec_from_file_location(
            "ztproxy.cli.audit",
            REPO / "ztproxy" / "cli" / "audit.py",
            submodule_search_locations=None,
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        module.__package__ = "ztproxy.cli"
        spec.loader.exec_module(module)
        return module


def run_cli(argv: Iterable[str]) -> tuple[int, str, str]:
    """Run `ztproxy audit ...` in-process through the real argparse wiring."""
    parser = argparse.ArgumentParser(prog="ztproxy")
    load_cli().register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["audit", *argv])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = int(args.func(args))
    return code, out.getvalue(), err.getvalue()
