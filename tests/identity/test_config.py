"""parse_identity: defaults, and every problem named by its key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ztproxy.config.identity import IdentityConfig, parse_identity
from ztproxy.config.reader import Node, Problems


def parse(section: Any, base_dir: str = ".") -> tuple[IdentityConfig, list[str]]:
    problems = Problems()
    root = Node({"identity": section}, "", problems, base_dir)
    cfg = parse_identity(root.section("identity"))
    return cfg, problems.items


def issuer(**over: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": "corp-idp",
        "kind": "user",
        "issuer": "https://idp.example",
        "audiences": ["ztproxy"],
        "algorithms": ["ES256", "RS256"],
        "jwks_uri": "https://idp.example/.well-known/jwks.json",
    }
    out.update(over)
    return {k: v for k, v in out.items() if v is not None}


def test_absent_section_is_valid() -> None:
    cfg, problems = parse(None)
    assert problems == [] and cfg.issuers == ()
    assert cfg.device_header == "device-authorization" and cfg.token_cache_size == 10000


def test_defaults() -> None:
    cfg, problems = parse({"issuers": [issuer()]})
    assert problems == []
    (iss,) = cfg.issuers
    assert (iss.name, iss.kind, iss.issuer) == ("corp-idp", "user", "https://idp.example")
    assert iss.audiences == ("ztproxy",) and iss.algorithms == ("ES256", "RS256")
    assert iss.required_claims == ("exp", "sub", "iat")
    assert iss.leeway_seconds == 30 and iss.jwks_cache_ttl_seconds == 600
    assert iss.jwks_refresh_min_interval_seconds == 30
    assert iss.jwks_stale_window_seconds == 3600 and iss.device_id_claim == "sub"


def test_device_issuer_always_requires_exp_and_its_id_claim() -> None:
    cfg, problems = parse(
        {
            "issuers": [
                issuer(kind="device", device_id_claim="device_id", required_claims=["iat"])
            ],
            "device_header": "X-Device-Token",
            "token_cache_size": 0,
        }
    )
    assert problems == []
    assert cfg.issuers[0].required_claims == ("exp", "device_id", "iat")
    assert cfg.device_header == "x-device-token" and cfg.token_cache_size == 0


@pytest.mark.parametrize(
    ("alg", "message"),
    [
        ("HS256", "identity.issuers[0].algorithms[1]: HS256 is not allowed (symmetric)"),
        ("hs512", "identity.issuers[0].algorithms[1]: hs512 is not allowed (symmetric)"),
        ("none", "identity.issuers[0].algorithms[1]: none is not allowed (unsigned)"),
        ("ES512", "identity.issuers[0].algorithms[1]: ES512 is not supported; use one of "),
        ("rs256", "identity.issuers[0].algorithms[1]: rs256 is not supported"),
    ],
)
def test_algorithms_refused(alg: str, message: str) -> None:
    _, problems = parse({"issuers": [issuer(algorithms=["ES256", alg])]})
    assert len(problems) == 1 and problems[0].startswith(message), problems


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"audiences": None}, "identity.issuers[0].audiences: is required"),
        ({"audiences": []}, "identity.issuers[0].audiences: needs at least one audience"),
        ({"algorithms": None}, "identity.issuers[0].algorithms: is required"),
        ({"algorithms": ["HS256"]}, "identity.issuers[0].algorithms: needs at least one"),
        ({"name": None}, "identity.issuers[0].name: is required"),
        ({"name": "Corp IdP"}, "identity.issuers[0].name: must be lowercase"),
        ({"kind": None}, "identity.issuers[0].kind: is required"),
        ({"kind": "admin"}, "identity.issuers[0].kind: must be one of user, device"),
        ({"issuer": None}, "identity.issuers[0].issuer: is required"),
        ({"jwks_uri": None}, "identity.issuers[0]: needs exactly one of jwks_uri"),
        (
            {"jwks": {"keys": [{"kty": "EC", "kid": "a"}]}},
            "identity.issuers[0]: needs exactly one of jwks_uri, jwks_file, jwks "
            "(got jwks_uri, jwks)",
        ),
        ({"jwks_uri": "http://idp.example/jwks"}, "identity.issuers[0].jwks_uri: must be an https"),
        ({"jwks_uri": "file:///etc/jwks"}, "identity.issuers[0].jwks_uri: must be an https"),
        ({"leeway_seconds": 61}, "identity.issuers[0].leeway_seconds: must be at most 60"),
        ({"leeway_seconds": -1}, "identity.issuers[0].leeway_seconds: must be at least 0"),
        (
            {"jwks_cache_ttl_seconds": 10},
            "identity.issuers[0].jwks_cache_ttl_seconds: must be at least "
            "jwks_refresh_min_interval_seconds (30)",
        ),
        ({"audience": "ztproxy"}, "identity.issuers[0].audience: unknown key"),
        (
            {"jwks_ca_file": "/nonexistent/ca.pem"},
            "identity.issuers[0].jwks_ca_file: file not found",
        ),
        (
            {"jwks_file": "/nonexistent/jwks.json", "jwks_uri": None},
            "identity.issuers[0].jwks_file: file not found",
        ),
    ],
)
def test_issuer_problems(over: dict[str, Any], message: str) -> None:
    _, problems = parse({"issuers": [issuer(**over)]})
    assert any(p.startswith(message) for p in problems), problems


def test_loopback_http_jwks_is_allowed() -> None:
    for uri in ("http://127.0.0.1:8080/jwks", "http://localhost/jwks", "http://[::1]:1/j"):
        _, problems = parse({"issuers": [issuer(jwks_uri=uri)]})
        assert problems == []


def test_inline_jwks_public_keys_only() -> None:
    good = {"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "kid": "k1"}
    cfg, problems = parse({"issuers": [issuer(jwks_uri=None, jwks={"keys": [good]})]})
    assert problems == [] and cfg.issuers[0].jwks == {"keys": [good]}
    cfg, problems = parse({"issuers": [issuer(jwks_uri=None, jwks=[good])]})
    assert problems == [] and cfg.issuers[0].jwks == {"keys": [good]}
    _, problems = parse(
        {"issuers": [issuer(jwks_uri=None, jwks={"keys": [dict(good, d="secret")]})]}
    )
    assert problems == [
        "identity.issuers[0].jwks.keys[0]: holds private or symmetric key "
        "material; give public keys only"
    ]
    _, problems = parse(
        {"issuers": [issuer(jwks_uri=None, jwks=[{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}])]}
    )
    assert problems and "private or symmetric" in problems[0]
    assert "secret" not in " ".join(problems) and "c2VjcmV0" not in " ".join(problems)
    _, problems = parse({"issuers": [issuer(jwks_uri=None, jwks=[{"kty": "EC"}])]})
    assert problems == ["identity.issuers[0].jwks[0]: needs a kid (tokens choose their key by kid)"]


def test_jwks_file_resolved_against_the_config_dir(tmp_path: Path) -> None:
    (tmp_path / "jwks.json").write_text('{"keys": []}')
    cfg, problems = parse(
        {"issuers": [issuer(jwks_uri=None, jwks_file="jwks.json")]}, base_dir=str(tmp_path)
    )
    assert problems == [] and cfg.issuers[0].jwks_file == str(tmp_path / "jwks.json")


def test_cross_issuer_problems() -> None:
    _, problems = parse(
        {
            "issuers": [
                issuer(),
                issuer(),  # same name, same iss and kind
                issuer(name="dev", kind="device"),  # same iss, other kind, same audience
            ]
        }
    )
    assert "identity.issuers[1].name: duplicate issuer name 'corp-idp'" in problems
    assert any(
        p.startswith("identity.issuers[1].issuer: same iss and kind as issuers[0]")
        for p in problems
    )
    assert any(p.startswith("identity.issuers[2].audiences: overlaps issuers[0]") for p in problems)
    _, problems = parse(
        {"issuers": [issuer(), issuer(name="dev", kind="device", audiences=["devices"])]}
    )
    assert problems == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("Authorization", "identity.device_header: authorization cannot carry the device token"),
        ("bad header", "identity.device_header: 'bad header' is not a valid header name"),
    ],
)
def test_device_header_problems(value: str, message: str) -> None:
    _, problems = parse({"device_header": value})
    assert problems == [message]


def test_unknown_keys_and_bad_shapes() -> None:
    _, problems = parse({"issuer": [], "issuers": ["x"], "token_cache_size": -1})
    assert "identity.issuer: unknown key (did you mean 'issuers'?)" in problems
    assert "identity.issuers[0]: must be a mapping, not str" in problems
    assert "identity.token_cache_size: must be at least 0" in problems
