"""Signed notes and keys: interoperable with Go's golang.org/x/mod/sumdb/note."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ztproxy.audit import keys, note
from ztproxy.audit.merkle import EMPTY_ROOT

# The example of golang.org/x/mod/sumdb/note (note.go, note_test.go).
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUg"
    "YN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def go_signer() -> keys.SigningKey:
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])[1:]
    return keys.SigningKey(Ed25519PrivateKey.from_private_bytes(seed), "PeterNeumann")


def test_sign_matches_go_note_byte_for_byte() -> None:
    signer = go_signer()
    assert signer.public.vkey == GO_VKEY
    assert note.sign_note(GO_TEXT, signer) == GO_NOTE


def test_go_note_verifies_with_parsed_vkey_and_fails_when_altered() -> None:
    key = keys.parse_vkey(GO_VKEY)
    parsed = note.parse_note(GO_NOTE)
    assert note.verify_note(parsed, (key,))[0] is note.SignatureCheck.VALID
    altered = note.parse_note(GO_NOTE.replace("answer", "ANSWER"))
    assert note.verify_note(altered, (key,))[0] is note.SignatureCheck.BAD_SIGNATURE
    other = keys.SigningKey(Ed25519PrivateKey.generate()).public
    assert note.verify_note(parsed, (other,))[0] is note.SignatureCheck.UNKNOWN_KEY


def test_vkey_with_wrong_hash_is_refused() -> None:
    with pytest.raises(keys.KeyFileError):
        keys.parse_vkey(GO_VKEY.replace("c74f20a3", "c74f20a4"))


def test_generate_keypair_modes_names_and_refusal_to_overwrite(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        private, public = keys.generate_keypair(tmp_path / "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    signer = keys.load_signing_key(private)
    pub = keys.load_public_key(public)
    assert pub == signer.public
    assert pub.name == "ztproxy-audit-" + pub.fingerprint[:16]
    assert "PRIVATE" not in repr(signer) and "[secure]" in repr(signer)
    with pytest.raises(FileExistsError):
        keys.generate_keypair(tmp_path / "k")
    keys.generate_keypair(tmp_path / "k", overwrite=True)
    assert keys.load_public_key(public) != pub
    # the vkey form is accepted as a public key file too
    (tmp_path / "v.txt").write_text(pub.vkey + "\n")
    assert keys.load_public_key(tmp_path / "v.txt") == pub


def test_wrong_key_files_are_refused_with_the_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    for loader in (keys.load_signing_key, keys.load_public_key):
        with pytest.raises(keys.KeyFileError, match="bad.pem"):
            loader(bad)


def test_checkpoint_round_trip_and_malformed_bodies(signer) -> None:
    cp = note.Checkpoint(
        "ztproxy/w3", 0, EMPTY_ROOT, "a" * 64, "a" * 64, "2026-11-28T00:00:00.000Z"
    )
    raw = note.sign_note(cp.text(), signer)
    signed = note.parse_signed_checkpoint(raw)
    assert signed.checkpoint == cp and cp.worker == 3
    for body in (
        cp.text().replace("\n0\n", "\n00\n"),
        cp.text().replace("head ", "hed "),
        cp.text() + "extra\n",
        cp.text().replace("a" * 64, "A" * 64, 1),
    ):
        with pytest.raises(note.NoteError):
            note.parse_checkpoint(body)
