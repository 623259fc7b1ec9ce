"""Vectors from OPA's own tests (open-policy-agent/opa bundle/verify_test.go, Apache-2.0):
tokens OPA's tests verify, the key they verify with, and a digest OPA printed. They
check our JWS handling and the structured-file walk against OPA's, not against our own
signer. (There is no `opa` binary here; see the note on what could not be exercised.)"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from ztproxy.policy.bundle.opahash import canonical_text, parse_number_preserving
from ztproxy.policy.bundle.refusal import ALGORITHM, SIGNATURE, BundleRefused
from ztproxy.policy.bundle.signing import VerificationKey, verify_signature

# TestVerifyJWTSignature: signedTokenRS256 and publicKeyValid / publicKeyInvalid
TOKEN_RS256 = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJmaWxlcyI6W3sibmFtZSI6ImRiL3VhbTIvZW50aXRsZW1lbnRzL2"
    "RhdGEuanNvbiIsImhhc2giOiJjMjEzMTU0NGM3MTZhMjVhNWUzMWY1MDQzMDBmNTI0MGU4MjM1Y2FkYjlhNTdmMGJk"
    "MWI2ZjRiZDc0YjI2NjEyIiwiYWxnb3JpdGhtIjoic2hhMjU2In0seyJuYW1lIjoiZGIvdWFtMi9wb2xpY3kvb3BhLXBv"
    "bGljeS5yZWdvIiwiaGFzaCI6IjQyY2ZlNjc2OGI1N2JiNWY3NTAzYzE2NWMyOGRkMDdhYzViODEzNTU0ZWJjODUwZjJj"
    "YzM1ODQzZTcxMzdiMWQifV0sImlhdCI6MTU5MjI1MTQwNiwiaXNzIjoiSldUU2VydmljZSIsImtleWlkIjoiZm9vIiwi"
    "c2NvcGUiOiJ3cml0ZSJ9.Xp1RTaiy9FXeELDWfdMYSsnRnmeBzRtoi4ewT5zr__4IXR0fgjpOOJgUoeFalTqumZQr3UO"
    "9PgSFM1Xfp1ivP8OQhMzCZEg8gI3yXQVfmu2Pb0Bo70t04AsqMjPG0XWIwYBgj20HwCrvjrzV3O9PfMWSLS03kL8iXzZD"
    "Nu8BnN5BEuG6X2gpd-KcqIy_OMJLJSUaXvD8a7nvhKm0WbRFGImS2ioUK_9zmz2C6T5oedxPrlardsr6TjXDU4QzMSEYX"
    "zv0UnXCPxE0oxAktY47AylOpvg0E1AfYtFFiTpMIhtEU00rVOeFKiDicdG-ZxxicXZTYayd3O5kcu5LusUm7naeWGXc0m"
    "TNyFLUehqn3rQxgHUOgFmS_IruRVLLflAxHOoa-KWjkHeZYx5mQVAQJZqkR2kf1o31tcmXo8zqEYSywUy40e4xU9ZEJepQ"
    "21oS0NkJLq1hSSD-0lSo9rGqsLboxJ_ZHmC109YrGNyxj4-AoIB_6_9UPOu43o2ylDmyxtiti10FjaO5LhLgr9noI9yTi"
    "F-0N5nlAQqiIU6v5ImGb0kAaHrk8Jhin52WHMn3gbyC1Ss9bQgEBl71ZrSqG5mxlws86iHCJ6dLTk_7A9KecH24S_Pt8h"
    "ufWQW9GpzoslditpQFH2fEKnGZqUipUE3qQI063xBAyeoX2YkiVIc"
)
PUBLIC_KEY_VALID = b"""-----BEGIN PUBLIC KEY-----
MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEA7nJwME0QNM6g0Ou9Sylj
lcIY4cnBcs8oWVHe74bJ7JTgYmDOk2CA14RE3wJNkUKERP/cRdesKDA/BToJXJUr
oYvhjXxUYn+i3wK5vOGRY9WUtTF9paIIpIV4USUOwDh3ufhA9K3tyh+ZVsqn80em
0Lj2ME0EgScuk6u0/UYjjNvcmnQl+uDmghG8xBZh7TZW2+aceMwlb4LJIP36VRhg
jKQGIxg2rW8ROXgJaFbNRCbiOUUqlq9SUZuhHo8TNOARXXxp9R4Fq7Cl7ZbwWtNP
wAtM1y+Z+iyu/i91m0YLlU2XBOGLu9IA8IZjPlbCnk/SygpV9NNwTY9DSQ0QfXcP
TGlsbFwzRzTlhH25wEl3j+2Ub9w/NX7Yo+j/Ei9eGZ8cq0bcvEwDeIo98HeNZWrL
UUArayRYvh8zutOlzqehw8waFk9AxpfEp9oWekSz8gZw9OL773EhnglYxxjkPHNz
k66CufLuTEf6uE9NLE5HnlQMbiqBFirIyAWGKyU3v2tphKvcogxmzzWA51p0GY0l
GZvlLNt2NrJv2oGecyl3BLqHnBi+rGAosa/8XgfQT8RIk7YR/tDPDmPfaqSIc0po
+NcHYEH82Yv+gfKSK++1fyssGCsSRJs8PFMuPGgv62fFrE/EHSsHJaNWojSYce/T
rxm2RaHhw/8O4oKcfrbaRf8CAwEAAQ==
-----END PUBLIC KEY-----"""
PUBLIC_KEY_INVALID = b"""-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDMYfnvWtC8Id5bPKae5yXSxQTt
+Zpul6AnnZWfI2TtIarvjHBFUtXRo96y7hoL4VWOPKGCsRqMFDkrbeUjRrx8iL91
4/srnyf6sh9c8Zk04xEOpK1ypvBz+Ks4uZObtjnnitf0NBGdjMKxveTq+VE7BWUI
yQjtQ8mbDOsiLLvh7wIDAQAB
-----END PUBLIC KEY-----"""


def _sig(token: str) -> bytes:
    return ('{"signatures": ["' + token + '"]}').encode()


def _refusal(key_pem: bytes, scope: str) -> BundleRefused:
    keys = {"foo": VerificationKey("foo", "RS256", load_pem_public_key(key_pem), scope)}
    with pytest.raises(BundleRefused) as info:
        verify_signature(_sig(TOKEN_RS256), keys)
    return info.value


def _reason(key_pem: bytes, scope: str) -> str:
    return _refusal(key_pem, scope).reason


def test_opa_rs256_token_verifies_with_opa_test_key() -> None:
    """The JWS verifies (key id from the payload's keyid, scope "write"); what stops it
    afterwards is the file entry's hash algorithm "sha256", which OPA's current
    NewSignatureHasher refuses as well ("unsupported hashing algorithm")."""
    refused = _refusal(PUBLIC_KEY_VALID, "write")
    assert refused.reason == ALGORITHM and "hash 'sha256'" in refused.detail


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_opa_rs256_token_with_the_wrong_key_or_scope() -> None:
    assert _reason(PUBLIC_KEY_INVALID, "write") == SIGNATURE
    assert _reason(PUBLIC_KEY_VALID, "bad_scope") == SIGNATURE  # OPA: "scope mismatch"


def test_opa_two_part_token_is_refused() -> None:
    bad = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.4nrInalqppAc9EjsNUD9Y35amVpDGoRk4bkxzdY8fhs"
    keys = {"foo": VerificationKey("foo", "HS256", b"secret")}
    with pytest.raises(BundleRefused) as info:
        verify_signature(_sig(bad), keys)
    assert info.value.reason == SIGNATURE


def test_manifest_digest_matches_the_one_opa_printed() -> None:
    """TestVerifyBundleFile "bad_digest": OPA reports the MD5 of the structured
    `.manifest` `{"revision": "quickbrownfaux"}` as a005c38a509dc2d5a7407b9494efb2ad.
    (We refuse MD5 in signatures; the walk is what is checked here.)"""
    text = canonical_text(parse_number_preserving(b'{"revision": "quickbrownfaux"}'))
    assert hashlib.md5(text).hexdigest() == "a005c38a509dc2d5a7407b9494efb2ad"  # noqa: S324
