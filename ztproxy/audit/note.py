"""Signed checkpoints: the C2SP signed-note envelope around a C2SP tlog-checkpoint
body, signed with Ed25519.

A checkpoint of worker N's chain reads (each line ends with a newline):

    <origin>/w<N>                 origin: names the log (and the worker's chain)
    <tree size>                   decimal: records seq 0 .. size-1 are covered
    <base64 root hash>            RFC 6962 root over those records' leaf hashes
    head <hex>                    the chain head: hash of record size-1 (genesis if 0)
    genesis <hex>                 the `prev` of record 0, fixed when the chain began
    time <RFC 3339 UTC>           when it was signed (heartbeats prove idle gaps)

    — <key name> <base64(4-byte key hash || 64-byte Ed25519 signature)>

Takes note text and keys; returns parsed notes and checkpoints. Parsing trusts
nothing: every malformed input raises `NoteError`, and a body is only believed after
`verify_note` found a good signature by a key the auditor gave.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from enum import Enum

from .keys import PublicKey, SigningKey

SIG_PREFIX = "\u2014 "
MAX_NOTE_BYTES = 64 * 1024
HEX_CHARS = frozenset("0123456789abcdef")


class NoteError(ValueError):
    """A note or checkpoint that is not well formed."""


@dataclass(frozen=True, slots=True)
class NoteSignature:
    name: str
    key_hash: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class Note:
    text: str
    signatures: tuple[NoteSignature, ...]


class SignatureCheck(Enum):
    VALID = "valid"
    UNKNOWN_KEY = "unknown key"
    BAD_SIGNATURE = "bad signature"


def sign_note(text: str, key: SigningKey) -> str:
    if not text.endswith("\n") or "\n\n" in text:
        raise NoteError("note text must end with one newline and hold no blank line")
    sig = key.sign(text.encode())
    blob = base64.b64encode(key.public.key_hash.to_bytes(4, "big") + sig).decode()
    return f"{text}\n{SIG_PREFIX}{key.public.name} {blob}\n"


def parse_note(data: str) -> Note:
    if len(data.encode()) > MAX_NOTE_BYTES:
        raise NoteError("note too large")
    if not data.endswith("\n"):
        raise NoteError("note does not end with a newline")
    split = data.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no signature block")
    text, block = data[:split + 1], data[split + 2:]
    sigs: list[NoteSignature] = []
    for line in block.splitlines():
        if not line.startswith(SIG_PREFIX):
            raise NoteError("malformed signature line")
        parts = line[len(SIG_PREFIX):].split(" ")
        if len(parts) != 2 or not parts[0]:
            raise NoteError("malformed signature line")
        try:
            raw = base64.b64decode(parts[1], validate=True)
        except binascii.Error:
            raise NoteError("signature is not base64") from None
        if len(raw) < 5:
            raise NoteError("signature too short")
        sigs.append(NoteSignature(parts[0], int.from_bytes(raw[:4], "big"), raw[4:]))
    if not sigs:
        raise NoteError("note has no signature")
    return Note(text, tuple(sigs))


def verify_note(note: Note, keys: tuple[PublicKey, ...]) -> tuple[SignatureCheck,
                                                                   PublicKey | None]:
    """VALID with the key when some known key signed the text; BAD_SIGNATURE when a
    known key's signature line is there but does not verify; else UNKNOWN_KEY."""
    bad: PublicKey | None = None
    for sig in note.signatures:
        for key in keys:
            if key.name == sig.name and key.key_hash == sig.key_hash:
                if key.verify(note.text.encode(), sig.signature):
                    return SignatureCheck.VALID, key
                bad = key
    if bad is not None:
        return SignatureCheck.BAD_SIGNATURE, bad
    return SignatureCheck.UNKNOWN_KEY, None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    head: str
    genesis: str
    time: str

    @property
    def worker(self) -> int | None:
        _, sep, tail = self.origin.rpartition("/w")
        return int(tail) if sep and tail.isdigit() else None

    def text(self) -> str:
        root = base64.b64encode(self.root).decode()
        return (f"{self.origin}\n{self.size}\n{root}\nhead {self.head}\n"
                f"genesis {self.genesis}\ntime {self.time}\n")


def _hex_field(line: str, label: str) -> str:
    prefix = label + " "
    value = line[len(prefix):]
    if not line.startswith(prefix) or len(value) != 64 or not set(value) <= HEX_CHARS:
        raise NoteError(f"checkpoint {label} line is malformed")
    return value


def parse_checkpoint(text: str) -> Checkpoint:
    lines = text.split("\n")
    if len(lines) != 7 or lines[-1] != "":
        raise NoteError("checkpoint body must have six lines")
    origin, size_s, root_s, head_l, genesis_l, time_l = lines[:6]
    if not origin or not size_s.isdigit() or (size_s != "0" and size_s[0] == "0"):
        raise NoteError("checkpoint origin or size is malformed")
    try:
        root = base64.b64decode(root_s, validate=True)
    except binascii.Error:
        raise NoteError("checkpoint root is not base64") from None
    if len(root) != 32:
        raise NoteError("checkpoint root is not a SHA-256 hash")
    if not time_l.startswith("time ") or len(time_l) > 64:
        raise NoteError("checkpoint time line is malformed")
    return Checkpoint(origin, int(size_s), root, _hex_field(head_l, "head"),
                      _hex_field(genesis_l, "genesis"), time_l[5:])


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    note: Note
    raw: str


def parse_signed_checkpoint(raw: str) -> SignedCheckpoint:
    note = parse_note(raw)
    return SignedCheckpoint(parse_checkpoint(note.text), note, raw)
