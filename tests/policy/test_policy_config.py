"""The `policy:` config section: defaults, validation, key paths in every problem."""

from __future__ import annotations

from pathlib import Path

from ztproxy.config.policy import PolicyConfig, check_decision_path, parse_policy
from ztproxy.config.reader import Node, Problems


def _parse(value: object, base: Path) -> tuple[PolicyConfig, list[str]]:
    problems = Problems()
    root = Node({"policy": value} if value is not None else {}, "", problems, str(base))
    cfg = parse_policy(root.section("policy"))
    return cfg, problems.items


def test_absent_section_is_embedded_over_policies_beside_the_config(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    cfg, problems = _parse(None, tmp_path)
    assert problems == []
    assert cfg.engine == "embedded"
    assert cfg.policy_dirs == (str(tmp_path / "policies"),)
    assert (
        cfg.decision_path,
        cfg.timeout_ms,
        cfg.cache_ttl_ms,
        cfg.cache_max_entries,
        cfg.breaker_failures,
        cfg.breaker_cooldown_ms,
        cfg.watch,
    ) == ("ztproxy/authz/decision", 250, 1000, 10000, 5, 5000, True)


def test_missing_policy_dir_is_named(tmp_path: Path) -> None:
    _, problems = _parse({"policy_dirs": ["nope"]}, tmp_path)
    assert problems == ["policy.policy_dirs[0]: directory not found: nope"]


def test_opa_engine_needs_a_url_and_not_the_dirs(tmp_path: Path) -> None:
    _, problems = _parse({"engine": "opa"}, tmp_path)
    assert problems == ["policy.opa_url: is required when engine is opa"]
    cfg, problems = _parse({"engine": "opa", "opa_url": "http://127.0.0.1:8181"}, tmp_path)
    assert problems == [] and cfg.opa_url == "http://127.0.0.1:8181"


def test_bad_values_each_reported(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    _, problems = _parse(
        {
            "engine": "wasm",
            "decision_path": "data.x.y",
            "timeout_ms": 0,
            "cache_ttl_ms": -1,
            "typo": 1,
            "opa_token": "inline-secret",
        },
        tmp_path,
    )
    assert "policy.engine: must be one of embedded, opa; got 'wasm'" in problems
    assert any(p.startswith("policy.decision_path:") for p in problems)
    assert "policy.timeout_ms: must be at least 1" in problems
    assert "policy.cache_ttl_ms: must be at least 0" in problems
    assert "policy.typo: unknown key" in problems
    assert "policy.opa_token: unknown key (did you mean 'opa_token_file'?)" in problems
    assert not any("inline-secret" in p for p in problems)


def test_opa_url_shape_and_tls_files(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    _, problems = _parse(
        {
            "engine": "opa",
            "opa_url": "http://opa:8181/v1/data",
            "opa_ca_file": "ca.pem",
            "opa_cert_file": "ca.pem",
        },
        tmp_path,
    )
    assert any(p.startswith("policy.opa_url: must be scheme://host") for p in problems)
    assert "policy.opa_cert_file: opa_cert_file and opa_key_file go together" in problems


def test_decision_path_check() -> None:
    assert check_decision_path("ztproxy/authz/decision") is None
    for bad in ("", "/a/b", "a/b/", "a.b", "a/b c", "a//b", "1a/b"):
        assert check_decision_path(bad), bad
