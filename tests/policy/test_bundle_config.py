"""`policy.bundle`: validation with key paths, and the decider it builds (readiness,
policy_revision on decisions) against a real local bundle server."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bundle_support import BundleServer, files_for, rsa_key, signed, tarball
from cryptography.hazmat.primitives import serialization
from policy_support import make_input

from ztproxy.config.policy import PolicyConfig, parse_policy
from ztproxy.config.reader import Node, Problems
from ztproxy.metrics import Metrics
from ztproxy.policy import build_decider, load_policy
from ztproxy.policy.decider import PolicyDecider

RSA = rsa_key()


def _parse(value: object, base: Path) -> tuple[PolicyConfig, list[str]]:
    problems = Problems()
    root = Node({"policy": value}, "", problems, str(base))
    return parse_policy(root.section("policy")), problems.items


def _pub(tmp: Path) -> str:
    path = tmp / "signer.pub.pem"
    path.write_bytes(
        RSA.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return str(path)


def _bundle(tmp: Path, **extra: object) -> dict[str, object]:
    return {
        "url": "https://bundles.example/b.tar.gz",
        "keys": {"global": {"key_file": _pub(tmp), "algorithm": "RS256"}},
        **extra,
    }


def test_a_good_section(tmp_path: Path) -> None:
    cfg, problems = _parse({"bundle": _bundle(tmp_path, persist_dir="state")}, tmp_path)
    assert problems == []
    assert cfg.bundle is not None and cfg.bundle.keys[0].algorithm == "RS256"
    assert cfg.bundle.persist_dir == str(tmp_path / "state")
    assert "PUBLIC" not in repr(cfg.bundle)


def test_engine_opa_refuses_bundle_naming_the_key_path(tmp_path: Path) -> None:
    _, problems = _parse(
        {"engine": "opa", "opa_url": "http://127.0.0.1:8181", "bundle": _bundle(tmp_path)},
        tmp_path,
    )
    assert any(p.startswith("policy.bundle: is for the embedded engine only") for p in problems)


def test_problems_name_their_key_paths(tmp_path: Path) -> None:
    bad = _bundle(tmp_path, pol_min_seconds=5, url="http://bundles.example/b.tar.gz")
    bad["keys"] = {
        "mac": {"key_file": _pub(tmp_path), "algorithm": "HS256"},
        "weird": {"key_file": _pub(tmp_path), "algorithm": "none"},
    }
    _, problems = _parse({"bundle": bad}, tmp_path)
    text = "\n".join(problems)
    assert "policy.bundle.pol_min_seconds: unknown key (did you mean 'poll_min_seconds'?)" in text
    assert "policy.bundle.url: must be https" in text
    assert "policy.bundle.keys.mac.key_file: an HMAC key is a secret_file" in text
    assert "policy.bundle.keys.weird.algorithm: must be one of" in text
    _, problems = _parse({"bundle": {"url": "https://b.example/x"}}, tmp_path)
    assert problems == [
        "policy.bundle.keys: needs at least one verification key (or allow_unsigned: true)"
    ]
    _, problems = _parse({"bundle": _bundle(tmp_path), "policy_dirs": ["p"]}, tmp_path)
    assert any(p.startswith("policy.bundle: policy_dirs / data_dirs") for p in problems)


async def test_decider_is_not_ready_until_a_bundle_activates(tmp_path: Path) -> None:
    server = BundleServer(raw=b"garbage")
    await server.start()
    url = f"http://127.0.0.1:{server.port}/bundle.tar.gz"
    cfg, problems = _parse({"bundle": _bundle(tmp_path, url=url)}, tmp_path)
    assert problems == [] and cfg.bundle is not None
    cfg = dataclasses.replace(
        cfg, bundle=dataclasses.replace(cfg.bundle, poll_min_seconds=3600, poll_max_seconds=3600)
    )
    assert load_policy(cfg) is None  # check-config cannot fetch; the bundle is checked on arrival
    metrics = Metrics()
    decider = build_decider(cfg, metrics=metrics)
    assert isinstance(decider, PolicyDecider)
    try:
        await decider.start()  # never fails for want of a bundle
        assert decider.readiness()["policy_loaded"] is False
        server.raw = tarball(signed(files_for("r7"), RSA))
        assert await decider.reload()
        assert decider.readiness()["policy_loaded"] is True
        decision = await decider.decide(cfg.decision_path, make_input())
        assert decision.allowed
        assert decision.policy_revision == decider.revision
        assert decider.revision.startswith("r7@sha256:")
    finally:
        await decider.close()
        await server.stop()
