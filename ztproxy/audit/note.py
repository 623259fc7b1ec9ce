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
import re
from dataclasses import dataclass
from enum import Enum

from .keys import PublicKey, SigningKey

SIG_PREFIX = "\u2014 "
MAX_NOTE_BYTES = 1024 * 1024  # Go has no limit; C2SP lets a verifier set one
_ALLOWED_BYTES = bytes(range(0x20, 0x100))  # deleted before looking for control bytes
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


MAX_SIGNATURES = 100  # Go's sumdb/note limit (C2SP: a verifier MUST accept 16)


def _malformed(reason: str) -> NoteError:
    return NoteError(f"malformed note: {reason}")


def valid_key_name(name: str) -> bool:
    """C2SP signed-note / Go's isValidName: non-empty, no Unicode space, no '+'."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


_STD_B64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def std_b64decode(text: str) -> bytes:
    """Standard base64 with padding, nothing else (Go's base64.StdEncoding): no
    whitespace, no URL-safe alphabet, no padding in the middle or extra padding.
    Non-zero pad bits are accepted, as Go does. Raises ValueError."""
    if not _STD_B64.fullmatch(text):
        raise ValueError("not standard padded base64")
    return base64.b64decode(text)


def _b64(text: str) -> bytes:
    try:
        return std_b64decode(text)
    except ValueError:
        raise _malformed("signature is not base64") from None


def parse_note(data: str | bytes) -> Note:
    """Split a signed note into its text and signature lines, exactly as Go's
    `note.Open` and C2SP signed-note do: valid UTF-8 with no control character but
    LF (so no TAB, CR or CRLF), the text ends at the last blank line, the signature
    block is lines "— <name> <base64>" each ending in LF (split only at LF, so
    U+2028, NEL and the like join lines and make them malformed), at most 100."""
    if isinstance(data, str):
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError:
            raise _malformed("not UTF-8") from None
        text_all = data
    else:
        raw = data
        try:
            text_all = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed("not UTF-8") from None
    if len(raw) > MAX_NOTE_BYTES:
        raise NoteError("note too large")
    if raw.translate(None, _ALLOWED_BYTES).replace(b"\n", b""):
        raise _malformed("control character")
    split = text_all.rfind("\n\n")
    if split < 0:
        raise _malformed("no signature block")
    text, block = text_all[: split + 1], text_all[split + 2 :]
    if not block or not block.endswith("\n"):
        raise _malformed("signature block does not end with a newline")
    sigs: list[NoteSignature] = []
    for line in block[:-1].split("\n"):
        if not line.startswith(SIG_PREFIX):
            raise _malformed("signature line does not start with an em dash and a space")
        name, _, blob = line[len(SIG_PREFIX) :].partition(" ")
        if not blob or not valid_key_name(name):
            raise _malformed("signature line has no valid key name and signature")
        sig = _b64(blob)
        if len(sig) < 5:
            raise _malformed("signature too short")
        sigs.append(NoteSignature(name, int.from_bytes(sig[:4], "big"), sig[4:]))
        if len(sigs) > MAX_SIGNATURES:
            raise _malformed("more than 100 signatures")
    return Note(text, tuple(sigs))


def verify_note(note: Note, keys: tuple[PublicKey, ...]) -> tuple[SignatureCheck, PublicKey | None]:
    """Go's `note.Open` verdict on a parsed note: every line by a known key (name and
    key hash) must verify, the first time that key appears (a repeat of a key already
    seen is skipped, as Go does); a failing line by a known key rejects the note
    (BAD_SIGNATURE) even when a good one follows; a key listed twice is ambiguous
    (BAD_SIGNATURE). VALID with the first key that verified; UNKNOWN_KEY when no
    known key signed."""
    index: dict[tuple[str, int], list[PublicKey]] = {}
    for key in keys:
        index.setdefault((key.name, key.key_hash), []).append(key)
    seen: set[tuple[str, int]] = set()
    first: PublicKey | None = None
    message = note.text.encode()
    for sig in note.signatures:
        ident = (sig.name, sig.key_hash)
        known = index.get(ident)
        if not known:
            continue
        if len(known) > 1:
            return SignatureCheck.BAD_SIGNATURE, known[0]
        if ident in seen:
            continue
        seen.add(ident)
        if not known[0].verify(message, sig.signature):
            return SignatureCheck.BAD_SIGNATURE, known[0]
        first = first or known[0]
    if first is None:
        return SignatureCheck.UNKNOWN_KEY, None
    return SignatureCheck.VALID, first


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
        return int(tail) if sep and tail.isascii() and tail.isdigit() else None

    def text(self) -> str:
        root = base64.b64encode(self.root).decode()
        return (
            f"{self.origin}\n{self.size}\n{root}\nhead {self.head}\n"
            f"genesis {self.genesis}\ntime {self.time}\n"
        )


def _hex_field(line: str, label: str) -> str:
    prefix = label + " "
    value = line[len(prefix) :]
    if not line.startswith(prefix) or len(value) != 64 or not set(value) <= HEX_CHARS:
        raise NoteError(f"checkpoint {label} line is malformed")
    return value


MAX_TREE_SIZE = 2**63 - 1  # int64, as Go's tlog; larger sizes are refused


@dataclass(frozen=True, slots=True)
class C2spCheckpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...]


def parse_c2sp_checkpoint(text: str) -> C2spCheckpoint:
    """A C2SP tlog-checkpoint body: origin (non-empty), tree size (ASCII decimal, no
    sign, no leading zero), root hash (standard padded base64 of 32 bytes), then
    non-empty extension lines; every line ends with LF."""
    if not text.endswith("\n"):
        raise NoteError("checkpoint does not end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise NoteError("checkpoint has fewer than three lines")
    origin, size_s, root_s, *extensions = lines
    if not origin:
        raise NoteError("checkpoint origin is empty")
    if not (size_s.isascii() and size_s.isdigit()) or (size_s != "0" and size_s[0] == "0"):
        raise NoteError("checkpoint size is not a decimal number without leading zeros")
    if len(size_s) > 19 or int(size_s) > MAX_TREE_SIZE:
        raise NoteError("checkpoint size is beyond 2**63 - 1")
    try:
        root = std_b64decode(root_s)
    except ValueError:
        raise NoteError("checkpoint root is not base64") from None
    if len(root) != 32:
        raise NoteError("checkpoint root is not a SHA-256 hash")
    if any(not line for line in extensions):
        raise NoteError("checkpoint has an empty extension line")
    return C2spCheckpoint(origin, int(size_s), root, tuple(extensions))


def parse_checkpoint(text: str) -> Checkpoint:
    """ztproxy's layout: a C2SP checkpoint with exactly the extension lines head,
    genesis and time, in that order."""
    body = parse_c2sp_checkpoint(text)
    if len(body.extensions) != 3:
        raise NoteError("checkpoint body must have six lines")
    head_l, genesis_l, time_l = body.extensions
    if not time_l.startswith("time ") or len(time_l) > 64:
        raise NoteError("checkpoint time line is malformed")
    return Checkpoint(
        body.origin,
        body.size,
        body.root,
        _hex_field(head_l, "head"),
        _hex_field(genesis_l, "genesis"),
        time_l[5:],
    )


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    note: Note
    raw: str


def parse_signed_checkpoint(raw: str | bytes) -> SignedCheckpoint:
    note = parse_note(raw)
    text = raw if isinstance(raw, str) else raw.decode("utf-8")
    return SignedCheckpoint(parse_checkpoint(note.text), note, text)
