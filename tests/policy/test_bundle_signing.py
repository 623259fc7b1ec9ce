"""Bundle signatures verified as OPA verifies them, and refused where they must be.

Real keys (RSA, EC P-256, RSA-PSS), real JWS from PyJWT; the digests follow OPA's
bundle/hash.go (checked here against its own test's premise: for JSON with no HTML or
line-separator characters, the walk equals Go's sorted compact json.Marshal).
"""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from bundle_support import POLICY, ec_key, files_for, keys_for, rsa_key, signed
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from ztproxy.policy.bundle.opahash import canonical_text, file_digest, parse_number_preserving
from ztproxy.policy.bundle.refusal import (
    ALGORITHM,
    DIGEST,
    EXPIRED,
    FILE_MISSING,
    FILE_UNSIGNED,
    SIGNATURE,
    UNKNOWN_KEY,
    BundleRefused,
)
from ztproxy.policy.bundle.signing import (
    SignedFile,
    VerificationKey,
    verify_files,
    verify_signature,
)

RSA = rsa_key()
EC = ec_key()


def check(files: list[tuple[str, bytes]], keys: dict[str, VerificationKey]) -> None:
    sig = dict(files)[".signatures.json"]
    verify_files(files, verify_signature(sig, keys))


def reason(files: list[tuple[str, bytes]], keys: dict[str, VerificationKey]) -> str:
    with pytest.raises(BundleRefused) as info:
        check(files, keys)
    return info.value.reason


def token_file(header: dict[str, object], payload: dict[str, object], sig: bytes = b"x") -> bytes:
    def enc(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    tok = ".".join([enc(json.dumps(header).encode()), enc(json.dumps(payload).encode()), enc(sig)])
    return json.dumps({"signatures": [tok]}).encode()


@pytest.mark.parametrize(
    ("key", "alg"), [(RSA, "RS256"), (EC, "ES256"), (RSA, "PS256"), (RSA, "RS512")]
)
def test_signed_bundle_verifies(key: object, alg: str) -> None:
    check(signed(files_for("r1"), key, alg), keys_for(key, alg))


def test_payload_lists_every_file_without_a_leading_slash_with_sha256() -> None:
    files = signed(files_for("r1"), RSA)
    listed = verify_signature(dict(files)[".signatures.json"], keys_for(RSA))
    assert sorted(listed) == [".manifest", "data.json", "ztproxy/authz/policy.rego"]
    assert {f.algorithm for f in listed.values()} == {"SHA-256"}


def test_key_id_from_the_deprecated_payload_claim() -> None:
    files = files_for("r1")
    payload = {
        "files": [{"name": n, "hash": file_digest(n, c), "algorithm": "SHA-256"} for n, c in files],
        "keyid": "global",
    }
    tok = jwt.api_jws.encode(json.dumps(payload).encode(), RSA, algorithm="RS256")  # no kid
    check([*files, (".signatures.json", json.dumps({"signatures": [tok]}).encode())], keys_for(RSA))


def test_tampered_file_is_refused() -> None:
    files = signed(files_for("r1"), RSA)
    bad = [
        (n, c.replace(b"version == 1", b"version == 2") if n.endswith(".rego") else c)
        for n, c in files
    ]
    assert reason(bad, keys_for(RSA)) == DIGEST


def test_data_json_whitespace_and_key_order_do_not_count_but_values_do() -> None:
    files = signed(files_for("r1"), RSA)
    doc = json.loads(dict(files)["data.json"])
    same = json.dumps(doc, indent=4, sort_keys=True).encode()
    check([(n, same if n == "data.json" else c) for n, c in files], keys_for(RSA))
    doc["ztproxy"]["config"]["reason"] = "changed"
    changed = json.dumps(doc).encode()
    assert (
        reason([(n, changed if n == "data.json" else c) for n, c in files], keys_for(RSA)) == DIGEST
    )


def test_file_not_in_the_signature_and_signed_file_missing() -> None:
    files = signed(files_for("r1"), RSA)
    assert reason([*files, ("extra/x.rego", b"package extra\n")], keys_for(RSA)) == FILE_UNSIGNED
    assert reason([f for f in files if f[0] != "data.json"], keys_for(RSA)) == FILE_MISSING


def test_unknown_key_and_missing_key_id() -> None:
    files = signed(files_for("r1"), RSA, kid="other")
    assert reason(files, keys_for(RSA)) == UNKNOWN_KEY
    files = signed(files_for("r1"), RSA, kid=None)
    check(files, keys_for(RSA))  # no key id named: the one configured key (as OPA's default)
    two = {**keys_for(RSA), **keys_for(EC, "ES256", kid="other")}
    assert reason(files, two) == UNKNOWN_KEY


def test_signature_by_another_key_with_the_same_id() -> None:
    files = signed(files_for("r1"), rsa_key())
    assert reason(files, keys_for(RSA)) == SIGNATURE


def test_algorithm_not_configured_for_the_key_is_refused() -> None:
    # ES256 token, key configured for RS256
    assert reason(signed(files_for("r1"), EC, "ES256"), keys_for(RSA)) == ALGORITHM
    # the classic confusion: HS256 "signed" with the RSA public key's PEM as secret
    pem = RSA.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    files = files_for("r1")
    payload = {
        "files": [{"name": n, "hash": file_digest(n, c), "algorithm": "SHA-256"} for n, c in files]
    }
    import hashlib
    import hmac

    def enc(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    signing_input = (
        enc(json.dumps({"alg": "HS256", "kid": "global"}).encode())
        + "."
        + enc(json.dumps(payload).encode())
    )
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    sig_file = json.dumps({"signatures": [signing_input + "." + enc(mac)]}).encode()
    assert reason([*files, (".signatures.json", sig_file)], keys_for(RSA)) == ALGORITHM


def test_alg_none_is_refused_even_if_configured_so() -> None:
    files = files_for("r1")
    payload = {
        "files": [{"name": n, "hash": file_digest(n, c), "algorithm": "SHA-256"} for n, c in files]
    }
    sig = token_file({"alg": "none", "kid": "global"}, payload, b"")
    keys = {"global": VerificationKey("global", "none", None)}
    assert reason([*files, (".signatures.json", sig)], keys) == ALGORITHM


def test_expired_jwt_is_refused() -> None:
    files = files_for("r1")
    payload = {
        "files": [{"name": n, "hash": file_digest(n, c), "algorithm": "SHA-256"} for n, c in files],
        "exp": int(time.time()) - 10,
    }
    tok = jwt.api_jws.encode(
        json.dumps(payload).encode(), RSA, algorithm="RS256", headers={"kid": "global"}
    )
    sig = json.dumps({"signatures": [tok]}).encode()
    assert reason([*files, (".signatures.json", sig)], keys_for(RSA)) == EXPIRED


@pytest.mark.parametrize(
    "sig",
    [
        b"not json",
        b"[]",
        b'{"signatures": []}',
        b'{"signatures": ["a.b.c", "a.b.c"]}',
        b'{"signatures": ["garbage"]}',
        b'{"signatures": ["!!!.???.###"]}',
    ],
)
def test_garbage_signatures_file_is_refused(sig: bytes) -> None:
    assert reason([*files_for("r1"), (".signatures.json", sig)], keys_for(RSA)) in (
        SIGNATURE,
        UNKNOWN_KEY,
    )


def test_weak_hash_algorithm_is_refused() -> None:
    files = files_for("r1")
    payload = {"files": [{"name": n, "hash": "00", "algorithm": "MD5"} for n, _ in files]}
    tok = jwt.api_jws.encode(
        json.dumps(payload).encode(), RSA, algorithm="RS256", headers={"kid": "global"}
    )
    assert (
        reason(
            [*files, (".signatures.json", json.dumps({"signatures": [tok]}).encode())],
            keys_for(RSA),
        )
        == ALGORITHM
    )


def test_scope_must_match() -> None:
    files = signed(files_for("r1"), RSA)
    keys = {"global": VerificationKey("global", "RS256", RSA.public_key(), scope="write")}
    assert reason(files, keys) == SIGNATURE


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_change_to_a_signed_module_is_refused(data: st.DataObject) -> None:
    """Property: flipping any bit of a module, or cutting it, never verifies."""
    content = POLICY
    at = data.draw(st.integers(0, len(content) - 1))
    how = data.draw(st.sampled_from(["flip", "cut", "append"]))
    if how == "flip":
        bit = 1 << data.draw(st.integers(0, 7))
        changed = content[:at] + bytes([content[at] ^ bit]) + content[at + 1 :]
    elif how == "cut":
        changed = content[:at]
    else:
        changed = content + data.draw(st.binary(min_size=1, max_size=4))
    listed = {"p.rego": SignedFile("p.rego", file_digest("p.rego", content), "SHA-256")}
    with pytest.raises(BundleRefused) as info:
        verify_files([("p.rego", changed)], listed)
    assert info.value.reason == DIGEST


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.text(
        st.characters(
            codec="utf-8", exclude_characters="<>&\u2028\u2029\x08\x0c", exclude_categories=("Cs",)
        ),
        max_size=8,
    ),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=5, alphabet="abcAB_é1"), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(_json)
def test_opa_walk_equals_go_sorted_compact_marshal(value: object) -> None:
    """OPA's hash_test.go premise: for such values the walk writes what Go's
    json.Marshal writes (sorted keys, compact). Python's compact sorted dumps writes
    the same bytes for these characters (Go and Python escape the control characters
    alike, in lower-case hex)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_text(parse_number_preserving(text.encode())) == text.encode()


def test_go_string_escapes() -> None:
    value = parse_number_preserving(b'["<a&b>", "\\u2028", "\\u0001", "\\b\\f", 1.50, 1e3]')
    assert canonical_text(value) == b'["<a&b>","\\u2028","\\u0001","\\b\\f",1.50,1e3]'


def test_data_yaml_is_hashed_as_its_json_value_and_data_yml_as_bytes() -> None:
    """OPA's IsStructuredDoc lists data.yaml (parsed, walked) but not data.yml (bytes)."""
    yaml_a, yaml_b = b"b: 2\na: [x, 0x10]\n", b"a:\n  - x\n  - 16\nb: 2\n"
    assert file_digest("t/data.yaml", yaml_a) == file_digest("t/data.yaml", yaml_b)
    assert file_digest("t/data.yaml", yaml_a) == file_digest("t/data.json", b'{"a":["x",16],"b":2}')
    assert file_digest("t/data.yml", yaml_a) != file_digest("t/data.yml", yaml_b)
    files = [*files_for("r1"), ("ztproxy/teams/data.yaml", yaml_a)]
    check(signed(files, RSA), keys_for(RSA))
