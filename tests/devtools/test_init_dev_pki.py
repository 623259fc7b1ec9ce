"""`init_dev_pki` writes the documented layout, chains everything to its CA, keeps private keys
0600, and never overwrites a non-empty directory unless forced."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from ztproxy.devtools.pki import (
    AUDIENCE,
    DEVICE_ISSUER,
    USER_ISSUER,
    DevPki,
    init_dev_pki,
    workload_spiffe_id,
)

EXPECTED_IDS = {
    "checkout": "spiffe://corp.example/ns/prod/sa/checkout",
    "payments": "spiffe://corp.example/ns/prod/sa/payments",
    "reports": "spiffe://corp.example/ns/prod/sa/reports",
    "batch": "spiffe://corp.example/ns/prod/sa/batch",
    "intruder": "spiffe://corp.example/ns/dev/sa/intruder",
}


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_layout_and_identities(dev_pki: DevPki) -> None:
    root = dev_pki.root
    assert dev_pki.ca_cert == root / "ca.pem" and dev_pki.ca_key == root / "ca.key"
    assert dev_pki.server_cert == root / "server.pem" and dev_pki.server_key == root / "server.key"
    assert dict(dev_pki.spiffe_ids) == EXPECTED_IDS
    for name in EXPECTED_IDS:
        assert dev_pki.workloads[name] == (
            root / "workloads" / f"{name}.pem",
            root / "workloads" / f"{name}.key",
        )
    assert dev_pki.user_key == root / "issuers" / "user.key"
    assert dev_pki.user_jwks == root / "issuers" / "user.jwks.json"
    assert dev_pki.device_key == root / "issuers" / "device.key"
    assert dev_pki.device_jwks == root / "issuers" / "device.jwks.json"
    assert (dev_pki.user_issuer, dev_pki.device_issuer, dev_pki.audience) == (
        USER_ISSUER,
        DEVICE_ISSUER,
        AUDIENCE,
    )
    assert (dev_pki.user_kid, dev_pki.device_kid) == ("user-1", "device-1")
    assert all(p.is_file() for p in dev_pki.written)


def test_everything_chains_to_the_written_ca(dev_pki: DevPki) -> None:
    policy = PolicyBuilder().store(Store([_load(dev_pki.ca_cert)]))
    policy.build_server_verifier(x509.DNSName("localhost")).verify(_load(dev_pki.server_cert), [])
    for name, (cert, _key) in dev_pki.workloads.items():
        verified = policy.build_client_verifier().verify(_load(cert), [])
        assert verified.subjects == [x509.UniformResourceIdentifier(EXPECTED_IDS[name])]


def test_private_keys_are_0600_and_public_files_are_not_secret(dev_pki: DevPki) -> None:
    keys = [p for p in dev_pki.written if p.suffix == ".key"]
    assert len(keys) >= 2 + len(EXPECTED_IDS) + 2
    for path in dev_pki.root.rglob("*"):
        if not path.is_file():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.suffix == ".key" or b"PRIVATE KEY" in path.read_bytes():
            assert mode == 0o600, path
        else:
            assert mode & 0o077 in (0o044, 0o004, 0o040, 0), path
            assert b"PRIVATE KEY" not in path.read_bytes()


def test_refuses_a_non_empty_directory_without_force(tmp_path: Path) -> None:
    out = tmp_path / "dev"
    out.mkdir()
    (out / "note.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty.*force"):
        init_dev_pki(out)
    assert sorted(p.name for p in out.iterdir()) == ["note.txt"]  # nothing written
    first = init_dev_pki(out, force=True)
    ca_before = first.ca_cert.read_bytes()
    with pytest.raises(FileExistsError):
        init_dev_pki(out)
    assert first.ca_cert.read_bytes() == ca_before
    second = init_dev_pki(out, force=True)
    assert second.ca_cert.read_bytes() != ca_before
    assert (out / "note.txt").read_text() == "mine"  # force overwrites ours, not the user's


def test_empty_existing_directory_and_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert init_dev_pki(tmp_path / "empty").ca_cert.is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        init_dev_pki(tmp_path / "file", force=True)


def test_custom_trust_domain_and_workloads(tmp_path: Path) -> None:
    pki = init_dev_pki(tmp_path / "d", trust_domain="example.org", workloads=["api", "qa/bot"])
    assert dict(pki.spiffe_ids) == {
        "api": "spiffe://example.org/ns/prod/sa/api",
        "bot": "spiffe://example.org/ns/qa/sa/bot",
    }
    assert pki.trust_domain == "example.org"
    with pytest.raises(ValueError, match="duplicate"):
        init_dev_pki(tmp_path / "e", workloads=["api", "dev/api"])


@pytest.mark.parametrize("entry", ["", "a/", "a/b/c", "/"])
def test_bad_workload_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError):
        workload_spiffe_id("corp.example", entry)


def test_audit_key_pair_is_written(dev_pki: DevPki) -> None:
    assert dev_pki.audit_dir == dev_pki.root / "audit"
    names = sorted(p.name for p in dev_pki.audit_dir.iterdir())
    assert len(names) == 2
    private = next(p for p in dev_pki.audit_dir.iterdir() if "private" in p.name)
    assert private.stat().st_mode & 0o777 == 0o600
