"""Finding 7: the note and checkpoint parsers are exactly as strict as C2SP and Go's
sumdb/note (the old parser accepted every case below)."""

from __future__ import annotations

import base64

import pytest

from ztproxy.audit.keys import SigningKey
from ztproxy.audit.note import (
    Checkpoint,
    NoteError,
    SignatureCheck,
    parse_note,
    parse_signed_checkpoint,
    sign_note,
    verify_note,
)

TEXT = Checkpoint("test/w0", 7, bytes(32), "ab" * 32, "cd" * 32, "2026-11-28T00:00:00.000Z").text()


def _bad_line(signer: SigningKey) -> str:
    blob = base64.b64encode(signer.public.key_hash.to_bytes(4, "big") + bytes(64)).decode()
    return f"\u2014 {signer.public.name} {blob}\n"


def test_failing_known_signature_before_a_good_one_is_rejected(signer: SigningKey) -> None:
    good = sign_note(TEXT, signer)
    text, block = good.split("\n\n", 1)[0] + "\n", good.split("\n\n", 1)[1]
    note = parse_note(f"{text}\n{_bad_line(signer)}{block}")
    assert verify_note(note, (signer.public,))[0] is SignatureCheck.BAD_SIGNATURE


def test_good_known_signature_then_its_failing_repeat_is_accepted_as_go_does(
    signer: SigningKey,
) -> None:
    good = sign_note(TEXT, signer)
    note = parse_note(good + _bad_line(signer))
    assert verify_note(note, (signer.public,))[0] is SignatureCheck.VALID


@pytest.mark.parametrize(
    "edit",
    [
        ("head ", "head\t"),  # TAB
        ("\ngenesis", "\rgenesis"),  # lone CR
        ("\n", "\r\n"),  # CRLF everywhere
        ("\ngenesis", "\u2028genesis"),  # U+2028 joins two lines
        ("\ngenesis", "\x00genesis"),
    ],
    ids=["tab", "cr", "crlf", "u2028", "nul"],
)
def test_control_characters_and_foreign_line_ends_are_rejected(
    signer: SigningKey, edit: tuple[str, str]
) -> None:
    signed = sign_note(TEXT, signer)
    with pytest.raises(NoteError):
        parse_signed_checkpoint(signed.replace(*edit))


@pytest.mark.parametrize("digit", ["\u0667", "\u06f7", "\uff17", "\U0001d7d5", "\u2466"])
def test_tree_size_in_non_ascii_digits_is_rejected(signer: SigningKey, digit: str) -> None:
    signed = sign_note(TEXT.replace("\n7\n", f"\n{digit}\n"), signer)
    with pytest.raises(NoteError):
        parse_signed_checkpoint(signed)


@pytest.mark.parametrize("sig_edit", ["  ", "\t"], ids=["two-spaces", "tab"])
def test_signature_line_separator_is_one_space(signer: SigningKey, sig_edit: str) -> None:
    signed = sign_note(TEXT, signer)
    name = signer.public.name
    with pytest.raises(NoteError):
        parse_note(signed.replace(f"{name} ", f"{name}{sig_edit}"))
