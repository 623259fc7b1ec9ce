"""`ztproxy policy build` writes bundles the bundle reader (and OPA's layout) accepts;
bundles laid out as OPA and `tar` write them load, with data at their data paths."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from bundle_support import Member, ec_key, keys_for, rsa_key, tarball
from cryptography.hazmat.primitives import serialization
from policy_support import SHIPPED

from ztproxy.cli import main
from ztproxy.policy.bundle.contents import open_bundle
from ztproxy.policy.bundle.refusal import OUTSIDE_ROOTS, BundleRefused
from ztproxy.policy.bundle.signing import verify_signature
from ztproxy.policy.loader import compile_sources

RSA = rsa_key()


def _pem(key: object, path: Path) -> str:
    path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(path)


def _names(raw: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return tar.getnames()


@pytest.mark.parametrize(("key", "alg"), [(RSA, "RS256"), (ec_key(), "ES256"), (RSA, "PS256")])
def test_build_signed_bundle_verifies_and_compiles(
    tmp_path: Path, key: object, alg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bundle.tar.gz"
    args = ["policy", "build", str(SHIPPED), "--revision", "v1", "-o", str(out)]
    args += ["--signing-key", _pem(key, tmp_path / "k.pem"), "--signing-alg", alg]
    assert main([*args, "--key-id", "global"]) == 0
    assert "PRIVATE" not in capsys.readouterr().out
    raw = out.read_bytes()
    # OPA's writer layout: leading "/", one /data.json, /.manifest, /.signatures.json
    assert _names(raw) == ["/.manifest", "/.signatures.json", "/data.json", "/ztproxy/authz.rego"]
    contents = open_bundle(raw, keys_for(key, alg))  # type: ignore[arg-type]
    assert contents.signed and contents.manifest.revision == "v1"
    assert contents.manifest.roots == ("",) and contents.manifest.rego_version == 1
    loaded = compile_sources(contents.sources, decision_paths=("ztproxy/authz/decision",))
    assert "data.ztproxy.authz" in loaded.packages
    assert json.loads(loaded.data_json)["ztproxy"]["segmentation"]  # data at its path
    # deterministic: the same inputs give the same bytes (and so the same revision);
    # RSA PKCS#1 v1.5 signatures are deterministic, ECDSA and PSS are not
    if alg == "RS256":
        assert main([*args, "--key-id", "global"]) == 0
        assert out.read_bytes() == raw


def test_unsigned_build_and_roots(tmp_path: Path) -> None:
    out = tmp_path / "b.tar.gz"
    assert main(["policy", "build", str(SHIPPED), "--root", "ztproxy", "-o", str(out)]) == 0
    contents = open_bundle(out.read_bytes(), {}, allow_unsigned=True)
    assert contents.manifest.roots == ("ztproxy",) and not contents.signed
    with pytest.raises(BundleRefused):
        open_bundle(out.read_bytes(), keys_for(RSA))  # unsigned, keys configured


def test_build_refuses_what_the_server_would(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(SHIPPED, policies)
    out = tmp_path / "b.tar.gz"
    # a package outside the declared roots
    assert main(["policy", "build", str(policies), "--root", "other", "-o", str(out)]) == 1
    # overlapping roots
    args = ["policy", "build", str(policies), "--root", "ztproxy", "--root", "ztproxy/authz"]
    assert main([*args, "-o", str(out)]) == 1
    # an unsound module (a builtin outside the allowlist)
    (policies / "ztproxy" / "bad.rego").write_text(
        'package ztproxy.bad\n\nx := http.send({"method": "GET", "url": "http://x"})\n'
    )
    assert main(["policy", "build", str(policies), "-o", str(out)]) == 1
    assert not out.exists()


def test_tar_written_bundle_with_nested_yaml_data(tmp_path: Path) -> None:
    """`tar -C dir -czf b.tar.gz .` names members "./..."; data.yaml in a nested
    directory lands at that directory's data path, as OPA's reader puts it."""
    rego = b"package ztproxy.authz\n\nimport rego.v1\n\ndecision := data.ztproxy.teams.allowed\n"
    raw = tarball(
        [
            Member("./", kind=tarfile.DIRTYPE),
            Member("./.manifest", b'{"revision": "t", "roots": ["ztproxy"]}'),
            Member("./ztproxy/authz/policy.rego", rego),
            Member("./ztproxy/teams/data.yaml", b"allowed: true\n"),
        ]
    )
    contents = open_bundle(raw, {}, allow_unsigned=True)
    loaded = compile_sources(contents.sources, decision_paths=("ztproxy/authz/decision",))
    assert json.loads(loaded.data_json) == {"ztproxy": {"teams": {"allowed": True}}}


def test_manifest_without_roots_owns_everything_and_roots_are_enforced() -> None:
    rego = b"package ztproxy.authz\n\nimport rego.v1\n\ndecision := true\n"
    files = [("ztproxy/authz/p.rego", rego), ("other/data.json", b'{"a": 1}')]
    open_bundle(tarball(files), {}, allow_unsigned=True)  # no manifest: roots [""]
    manifest = (".manifest", b'{"revision": "x", "roots": ["ztproxy"]}')
    with pytest.raises(BundleRefused) as info:
        open_bundle(tarball([manifest, *files]), {}, allow_unsigned=True)
    assert info.value.reason == OUTSIDE_ROOTS
    # data at a path on the way to a root is walked into (OPA's rule)
    root_data = ("data.json", b'{"ztproxy": {"x": 1}}')
    open_bundle(tarball([manifest, files[0], root_data]), {}, allow_unsigned=True)


def test_signature_lists_the_opa_names(tmp_path: Path) -> None:
    out = tmp_path / "b.tar.gz"
    key = _pem(RSA, tmp_path / "k.pem")
    assert (
        main(
            ["policy", "build", str(SHIPPED), "--signing-key", key, "--key-id", "k", "-o", str(out)]
        )
        == 0
    )
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(out.read_bytes()))) as tar:
        fh = tar.extractfile("/.signatures.json")
        assert fh is not None
        sig = fh.read()
    listed = verify_signature(sig, keys_for(RSA, kid="k"))
    assert sorted(listed) == [".manifest", "data.json", "ztproxy/authz.rego"]


def test_a_second_signatures_file_is_refused() -> None:
    """OPA reads any member ending in "signatures.json" as the signatures file."""
    rego = b"package ztproxy.authz\n\nimport rego.v1\n\ndecision := true\n"
    raw = tarball([("ztproxy/authz/p.rego", rego), ("ztproxy/signatures.json", b"{}")])
    with pytest.raises(BundleRefused) as info:
        open_bundle(raw, {}, allow_unsigned=True)
    assert info.value.reason == "member_name"
