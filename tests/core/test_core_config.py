"""Config: every problem named by its key path, all at once; a valid config summarized."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from ztproxy.cli.run import cmd_check_config
from ztproxy.config.load import load_config, parse_config
from ztproxy.errors import ConfigError


@pytest.fixture
def files(tmp_path: Path) -> Path:
    for name in ("server.pem", "server.key", "ca.pem"):
        (tmp_path / name).write_text("x")
    return tmp_path


def _base(**over: object) -> dict:
    cfg: dict = {
        "listener": {"cert_file": "server.pem", "key_file": "server.key"},
        "trust_domains": [{"name": "corp.example", "bundle_file": "ca.pem"}],
        "routes": [
            {
                "name": "a",
                "service": "a",
                "upstream": "http://127.0.0.1:1",
                "user": "none",
                "device": "none",
            }
        ],
        "audit": {"dir": "audit", "signing_key": "audit.key"},
    }
    cfg.update(over)
    return cfg


def _problems(raw: dict, base: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(raw, str(base))
    return list(err.value.problems)


def test_every_problem_named_by_key_path(files: Path) -> None:
    raw = _base(
        routes=[
            {
                "name": "a",
                "service": "a",
                "upstream": "http://127.0.0.1:1",
                "user": "none",
                "device": "none",
            },
            {
                "name": "b",
                "service": "b",
                "upstream": "http://127.0.0.1:2",
                "user": "sometimes",
                "device": "none",
            },
            {
                "name": "c",
                "service": "c",
                "upstream": "ftp://x",
                "user": "none",
                "device": "none",
                "path_prefix": "/a/../b",
                "colour": "blue",
                "decision_path": "data/../x",
            },
        ],
        trust_domains=[{"name": "Corp.Example", "bundle_file": "ca.pem"}],
        limits={"max_body_bytes": -1},
    )
    raw["listener"]["port"] = "8443"
    problems = "\n".join(_problems(raw, files))
    assert "routes[2].upstream: not an http(s) URL" in problems
    assert "routes[1].user: must be one of required, optional, none" in problems
    assert "routes[2].path_prefix: must be a canonical absolute path" in problems
    assert "routes[2].colour: unknown key" in problems
    assert "routes[2].decision_path: segment '..' is not a Rego identifier" in problems
    assert "trust_domains[0].name: 'Corp.Example' is not a SPIFFE trust domain" in problems
    assert "limits.max_body_bytes: must be at least 0" in problems
    assert "listener.port: must be an integer, not str" in problems


def test_missing_sections_and_files(tmp_path: Path) -> None:
    problems = "\n".join(_problems({"routes": []}, tmp_path))
    assert "listener: is required" in problems
    assert "trust_domains: is required" in problems
    assert "routes: must list at least one route" in problems
    problems = "\n".join(_problems(_base(), tmp_path))
    assert "listener.cert_file: file not found: server.pem" in problems


def test_route_needing_tokens_without_issuer_is_an_error(files: Path) -> None:
    raw = _base()
    del raw["routes"][0]["user"]
    problems = "\n".join(_problems(raw, files))
    assert "routes[0].user: is required but no identity issuer of kind user" in problems


def test_yaml_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("listener:\n  port: [1,\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(bad))
    assert "not valid YAML (line" in err.value.problems[0]
    with pytest.raises(ConfigError) as err:
        load_config(str(tmp_path / "absent.yaml"))
    assert "config file not found" in err.value.problems[0]


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ztproxy.devtools.pki import init_dev_pki

    pki = init_dev_pki(tmp_path / "pki")
    from ztproxy.devtools.lab import proxy_config

    raw = proxy_config(
        pki, upstreams={"payments": "http://127.0.0.1:9"}, audit_dir=tmp_path / "audit"
    )
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(raw))
    assert cmd_check_config(argparse.Namespace(config=str(good))) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "payments-api" in out and "corp.example" in out
    raw["routes"][0]["upstream"] = "gopher://x"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    assert cmd_check_config(argparse.Namespace(config=str(bad))) == 1
    assert "routes[0].upstream: not an http(s) URL" in capsys.readouterr().err


def test_unloadable_tls_material_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ztproxy.devtools.lab import proxy_config
    from ztproxy.devtools.pki import init_dev_pki

    pki = init_dev_pki(tmp_path / "pki")
    raw = proxy_config(
        pki, upstreams={"payments": "https://127.0.0.1:9"}, audit_dir=tmp_path / "audit"
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    raw["trust_domains"][0]["bundle_file"] = str(garbage)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert cmd_check_config(argparse.Namespace(config=str(cfg))) == 1
    assert "trust_domains[0].bundle_file: cannot load" in capsys.readouterr().err
    raw["trust_domains"][0]["bundle_file"] = str(pki.ca_cert)
    raw["routes"][0]["upstream_ca_file"] = str(garbage)
    cfg.write_text(yaml.safe_dump(raw))
    assert cmd_check_config(argparse.Namespace(config=str(cfg))) == 1
    err = capsys.readouterr().err
    assert "routes[payments-api].upstream_ca_file: cannot load" in err
    assert "BEGIN" not in err
