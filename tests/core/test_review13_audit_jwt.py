"""Review of issue 13, item 7: a JWT in the path never reaches the signed audit record,
whatever its spelling. Padded parts ("=" or "%3D": strip it and the token is back) and
a JOSE header with white space after "{" (PyJWT verifies it) used to be recorded
verbatim."""

from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from jwt.utils import base64url_encode

from ztproxy.stages.audit_fields import attempted_path, audited_path

KEY = ec.generate_private_key(ec.SECP256R1())


def _padded(token: str, pad: str = "=") -> str:
    return ".".join(p + pad * (-len(p) % 4) for p in token.split("."))


def _spaced_header_token() -> str:
    head, body = base64url_encode(b'{ "alg": "ES256"}'), base64url_encode(b'{"sub":"bob"}')
    sig = ECAlgorithm(ECAlgorithm.SHA256).sign(head + b"." + body, KEY)
    token = (head + b"." + body + b"." + base64url_encode(sig)).decode()
    assert jwt.decode(token, KEY.public_key(), algorithms=["ES256"]) == {"sub": "bob"}
    return token


def _secret_parts(token: str) -> list[str]:
    return [p.rstrip("=").removesuffix("%3D%3D").removesuffix("%3D") for p in token.split(".")]


@pytest.mark.parametrize(
    "token",
    [
        _padded(jwt.encode({"sub": "bob"}, KEY, algorithm="ES256")),
        _padded(jwt.encode({"sub": "bob"}, KEY, algorithm="ES256"), "%3D"),
        _spaced_header_token(),
    ],
)
def test_jwt_spellings_are_redacted_from_the_audited_path(token: str) -> None:
    for recorded in (audited_path(f"/api/t/{token}/x"), attempted_path(f"/api/t/{token}?q=1")):
        assert "[jwt:sha256:" in recorded
        for part in _secret_parts(token)[:2]:
            assert part not in recorded, recorded


def test_ordinary_dotted_paths_are_kept() -> None:
    for path in ("/files/eyes.tar.gz", "/news/ewok.v1.json", "/eyJ.a.b", "/plain"):
        assert audited_path(path) == path
