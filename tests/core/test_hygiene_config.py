"""Issue 13 config findings: an upstream URL with a path, plain-http opa_url to a
remote host, pass_headers, and the new limits/timeouts keys (named by key path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ztproxy.config.load import parse_config
from ztproxy.errors import ConfigError


@pytest.fixture
def files(tmp_path: Path) -> Path:
    for name in ("server.pem", "server.key", "ca.pem"):
        (tmp_path / name).write_text("x")
    (tmp_path / "policies").mkdir()
    (tmp_path / "audit.key").write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tmp_path


def _base(route: dict | None = None, **over: object) -> dict:
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
                **(route or {}),
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


def test_upstream_url_with_a_path_is_refused(files: Path) -> None:
    problems = _problems(_base({"upstream": "http://127.0.0.1:1/prefix"}), files)
    assert any(p.startswith("routes[0].upstream:") and "path" in p for p in problems)
    parse_config(_base({"upstream": "http://127.0.0.1:1/"}), str(files))


@pytest.mark.parametrize(
    "url,ok",
    [
        ("http://opa.corp.example:8181", False),
        ("http://10.0.0.5:8181", False),
        ("http://127.0.0.1:8181", True),
        ("http://localhost:8181", True),
        ("http://[::1]:8181", True),
        ("https://opa.corp.example:8181", True),
    ],
)
def test_opa_url_plain_http_only_to_loopback(files: Path, url: str, ok: bool) -> None:
    raw = _base(policy={"engine": "opa", "opa_url": url})
    if ok:
        parse_config(raw, str(files))
    else:
        assert any(p.startswith("policy.opa_url:") for p in _problems(raw, files))


def test_pass_headers_named_and_never_an_asserted_one(files: Path) -> None:
    cfg = parse_config(
        _base({"pass_headers": ["X-Forwarded-Prefix", "x_ssl_client_cert"]}), str(files)
    )
    assert cfg.routes[0].pass_headers == {"x-forwarded-prefix", "x-ssl-client-cert"}
    problems = _problems(_base({"pass_headers": ["X-Client-Spiffe-Id", "bad name"]}), files)
    assert any(p.startswith("routes[0].pass_headers[0]:") for p in problems)
    assert any(p.startswith("routes[0].pass_headers[1]:") for p in problems)


def test_new_limit_and_timeout_keys(files: Path) -> None:
    cfg = parse_config(
        _base(
            {"max_concurrent": 5},
            limits={
                "max_concurrent_per_caller": 7,
                "max_header_phase_per_source": 3,
                "max_chunk_extension_bytes": 64,
            },
            timeouts={
                "request_header_seconds": 1.5,
                "body_idle_seconds": 2,
                "body_total_seconds": 30,
            },
        ),
        str(files),
    )
    assert cfg.routes[0].max_concurrent == 5
    assert (
        cfg.limits.max_concurrent_per_caller,
        cfg.limits.max_header_phase_per_source,
        cfg.limits.max_chunk_extension_bytes,
    ) == (7, 3, 64)
    assert (
        cfg.timeouts.request_header_seconds,
        cfg.timeouts.body_idle_seconds,
        cfg.timeouts.body_total_seconds,
    ) == (1.5, 2, 30)
    problems = _problems(
        _base(timeouts={"request_header_seconds": 0}, limits={"max_concurrent_per_caller": 0}),
        files,
    )
    assert any(p.startswith("timeouts.request_header_seconds:") for p in problems)
    assert any(p.startswith("limits.max_concurrent_per_caller:") for p in problems)


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_refuses_to_start_on_the_pure_python_parser(files: Path, command: str) -> None:
    """Under AIOHTTP_NO_EXTENSIONS=1 aiohttp's pure-Python parser accepted `get` as
    `GET` and forwarded a chunk size of `ffffffffffffffff1`: one line, exit 1."""
    config = files / "ztproxy.yaml"
    config.write_text(yaml.safe_dump(_base()))
    env = {**os.environ, "AIOHTTP_NO_EXTENSIONS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "ztproxy", command, "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "C HTTP parser is not in use" in proc.stderr
    assert "Traceback" not in proc.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "ztproxy", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "C HTTP parser" not in ok.stderr
