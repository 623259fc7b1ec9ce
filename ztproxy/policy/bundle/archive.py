"""A bundle's bytes -> its files, read with limits. Trusts nothing in the archive.

Takes the downloaded (or persisted) bytes and `Limits`; returns an `Archive`: the
regular files by name, in archive order, and the SHA-256 of the bytes. Raises
`BundleRefused` for anything that is not a plain, bounded gzipped tar of regular files:

- gzip is expanded incrementally and stops at `max_total_bytes` (a zip bomb never
  expands beyond the limit) or when expanded/compressed passes `max_ratio`;
- every member name must be a relative path inside the bundle (see `member_name`);
- only regular files and directories; symlinks, hard links, devices, fifos and sparse
  files are refused (OPA's tarball loader skips them silently; a bundle that holds one
  was not written by `opa build`);
- a member larger than `max_member_bytes`, or more than `max_members` members, refuses.

Nothing is ever extracted to disk: the names only become data paths and module names.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import zlib
from dataclasses import dataclass

from .refusal import ARCHIVE_SIZE, MEMBER_NAME, MEMBER_SIZE, MEMBER_TYPE, TRUNCATED, BundleRefused


@dataclass(frozen=True, slots=True)
class Limits:
    max_compressed_bytes: int = 64 << 20
    max_total_bytes: int = 256 << 20  # expanded tar
    max_member_bytes: int = 64 << 20
    max_ratio: int = 200  # expanded / compressed (OPA's own bundles: about 3 to 10)
    max_members: int = 10_000


@dataclass(frozen=True, slots=True)
class Archive:
    files: tuple[tuple[str, bytes], ...]  # (normalized name, content), archive order
    sha256: str  # of the bytes as downloaded

    def get(self, name: str) -> bytes | None:
        for key, content in self.files:
            if key == name:
                return content
        return None


def member_name(raw: str) -> str:
    """The member's name inside the bundle ("a/b/data.json"), or BundleRefused.

    One leading "/" is OPA's own convention (its writer names members "/data.json")
    and one leading "./" is what `tar -C dir .` writes: both mean the bundle root.
    Refused: anything else absolute ("//x", "C:x"), a backslash, a NUL or other control
    character, an empty, "." or ".." segment."""
    name = raw
    if name.startswith("/"):
        name = name[1:]
    elif name.startswith("./"):
        name = name[2:]
    if name.endswith("/"):  # directories
        name = name[:-1]
    shown = repr(raw[:80])
    if not name:
        raise BundleRefused(MEMBER_NAME, f"member {shown}: empty name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise BundleRefused(MEMBER_NAME, f"member {shown}: absolute path")
    if "\\" in name or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise BundleRefused(MEMBER_NAME, f"member {shown}: backslash or control character")
    for segment in name.split("/"):
        if segment in ("", ".", ".."):
            raise BundleRefused(MEMBER_NAME, f"member {shown}: path traversal or empty segment")
    return name


def _gunzip(raw: bytes, limits: Limits) -> bytes:
    """Expand gzip (several members, as Go's reader does), never past the limits."""
    if len(raw) > limits.max_compressed_bytes:
        raise BundleRefused(ARCHIVE_SIZE, f"bundle is {len(raw)} bytes compressed")
    cap = limits.max_total_bytes
    out = bytearray()
    data = raw
    while True:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            while True:
                chunk = d.decompress(data, 1 << 20)
                out += chunk
                if len(out) > cap:
                    raise BundleRefused(ARCHIVE_SIZE, f"expands beyond {cap} bytes")
                if len(out) > limits.max_ratio * max(len(raw), 1):
                    raise BundleRefused(ARCHIVE_SIZE, f"expands more than {limits.max_ratio} times")
                data = d.unconsumed_tail
                if not data or d.eof:
                    break
        except zlib.error:
            raise BundleRefused(TRUNCATED, "not a gzip stream, or a damaged one") from None
        if not d.eof:
            raise BundleRefused(TRUNCATED, "gzip stream ends early")
        data = d.unused_data
        if not data:
            return bytes(out)


def read_archive(raw: bytes, limits: Limits = Limits()) -> Archive:
    digest = hashlib.sha256(raw).hexdigest()
    tar_bytes = _gunzip(raw, limits)
    files: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    count = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
            for info in tar:
                count += 1
                if count > limits.max_members:
                    raise BundleRefused(ARCHIVE_SIZE, f"more than {limits.max_members} members")
                if info.isdir() and info.name.strip("/") in ("", "."):
                    continue  # the root itself ("./" from `tar -C dir -czf b.tar.gz .`)
                name = member_name(info.name)
                if info.type == tarfile.GNUTYPE_SPARSE or not (info.isreg() or info.isdir()):
                    kind = "link" if info.issym() or info.islnk() else "special file"
                    raise BundleRefused(MEMBER_TYPE, f"member {name!r}: {kind}")
                if name in seen:
                    raise BundleRefused(MEMBER_NAME, f"member {name!r}: appears twice")
                seen.add(name)
                if info.isdir():
                    continue
                if info.size > limits.max_member_bytes:
                    raise BundleRefused(
                        MEMBER_SIZE,
                        f"member {name!r}: {info.size} bytes (limit {limits.max_member_bytes})",
                    )
                fh = tar.extractfile(info)
                content = fh.read() if fh is not None else b""
                if len(content) != info.size:
                    raise BundleRefused(TRUNCATED, f"member {name!r}: cut short")
                files.append((name, content))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BundleRefused(
            TRUNCATED, f"not a complete tar archive ({type(exc).__name__})"
        ) from None
    if not files:
        raise BundleRefused(TRUNCATED, "no files in the archive")
    return Archive(tuple(files), digest)
