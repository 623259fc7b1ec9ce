"""Ed25519 keys for signing audit checkpoints, and their names in signed notes.

Takes PEM files (PKCS#8 private key, SubjectPublicKeyInfo public key); returns a
`SigningKey` (used only by the writer thread) or `PublicKey`s (used by auditors).
The key name and the C2SP key hash are derived from the public key alone, so a
verifier given several public keys needs nothing else, and keys can rotate:

    fingerprint = hex(SHA-256(raw 32-byte public key))
    name        = "ztproxy-audit-" + fingerprint[:16]
    key hash    = SHA-256(name || 0x0A || 0x01 || raw public key)[:4]   (C2SP signed-note)
    vkey        = name + "+" + hex(key hash) + "+" + base64(0x01 || raw public key)

The vkey is the verifier-key form of Go's golang.org/x/mod/sumdb/note, so other
signed-note tooling can check our checkpoints too.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

NAME_PREFIX = "ztproxy-audit-"
ALG_ED25519 = 0x01
PRIVATE_FILE = "audit-private.pem"
PUBLIC_FILE = "audit-public.pem"


class KeyFileError(ValueError):
    """A key file that cannot be used. The message names the file, never key bytes."""


def note_key_hash(name: str, raw_public: bytes) -> int:
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + raw_public)
    return int.from_bytes(digest.digest()[:4], "big")


@dataclass(frozen=True, slots=True)
class PublicKey:
    """An Ed25519 verifier key with its signed-note name and key hash."""

    raw: bytes
    name: str
    key_hash: int

    @classmethod
    def from_raw(cls, raw: bytes, name: str | None = None) -> PublicKey:
        if len(raw) != 32:
            raise KeyFileError("an Ed25519 public key has 32 bytes")
        if name is None:
            name = NAME_PREFIX + hashlib.sha256(raw).hexdigest()[:16]
        return cls(raw, name, note_key_hash(name, raw))

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def key_id(self) -> str:
        return f"{self.key_hash:08x}"

    @property
    def vkey(self) -> str:
        blob = base64.b64encode(bytes([ALG_ED25519]) + self.raw).decode()
        return f"{self.name}+{self.key_id}+{blob}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except InvalidSignature:
            return False
        return True


class SigningKey:
    """The private half. Its repr never shows key material."""

    __slots__ = ("_key", "public")

    def __init__(self, key: Ed25519PrivateKey, name: str | None = None) -> None:
        self._key = key
        raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public = PublicKey.from_raw(raw, name)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"SigningKey({self.public.name}, [secure])"


def generate_keypair(
    out_dir: str | os.PathLike[str], *, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write a new key pair into `out_dir`: the private key (PKCS#8 PEM, mode 0600,
    created with that mode so it is never readable by others, even briefly) and the
    public key (PEM). Refuses to replace an existing private key unless `overwrite`."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / PRIVATE_FILE, directory / PUBLIC_FILE
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(private_path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    public_pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    public_path.write_bytes(public_pem)
    return private_path, public_path


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read signing key: {exc.strerror}") from None
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 private key")
    return SigningKey(key)


_HEX8 = re.compile(r"[0-9a-fA-F]{8}")


def parse_vkey(text: str) -> PublicKey:
    """A verifier key in the signed-note form `name+hash+base64(0x01||key)`, parsed
    as Go's `note.NewVerifier` does: a valid key name, exactly 8 hex digits, standard
    padded base64 (Go's decoder skips CR and LF, nothing else), an Ed25519 key of 32
    bytes, and a key hash that matches the name and key."""
    name, _, rest = text.partition("+")
    hash_hex, _, blob = rest.partition("+")
    from .note import std_b64decode, valid_key_name  # note.py imports this module

    if not valid_key_name(name) or not _HEX8.fullmatch(hash_hex):
        raise KeyFileError("not a verifier key (name+hash+key)")
    try:
        raw = std_b64decode(blob.replace("\r", "").replace("\n", ""))
    except ValueError:
        raise KeyFileError("not a verifier key (name+hash+key)") from None
    if not raw:
        raise KeyFileError("not a verifier key (name+hash+key)")
    if note_key_hash(name, raw[1:]) != int(hash_hex, 16) and raw[0] == ALG_ED25519:
        raise KeyFileError("verifier key hash does not match its name and key")
    if len(raw) != 33 or raw[0] != ALG_ED25519:
        raise KeyFileError("verifier key is not Ed25519")
    return PublicKey.from_raw(raw[1:], name)


def load_public_key(path: str | os.PathLike[str]) -> PublicKey:
    """A public key from a PEM file (or a file holding one signed-note vkey line)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read public key: {exc.strerror}") from None
    if b"-----BEGIN" not in data:
        try:
            return parse_vkey(data.decode("utf-8").strip())
        except (UnicodeDecodeError, KeyFileError) as exc:
            raise KeyFileError(f"{path}: {exc}") from None
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError):
        raise KeyFileError(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an Ed25519 public key")
    return PublicKey.from_raw(key.public_bytes(Encoding.Raw, PublicFormat.Raw))
