"""Bundle download and persistence: the I/O half of the bundle service.

`BundleClient` owns one aiohttp session (created in `open()`, closed in `close()`)
and fetches the bundle URL with `If-None-Match: <last ETag>`: returns `Fetched`
(`not_modified` for a 304, else the bytes and the new ETag) or raises `BundleRefused`
(`download_failed` for a network error, a timeout or a non-200 status;
`archive_too_large` past the size limit, counted while reading: the body is never
held beyond it). HTTPS verifies the server against `ca_file` when given, else the
system trust store. Extra request headers (`headers_from_file`: `Name: value` lines,
such as a bearer token) are read from the file at every fetch, so a rotated token is
picked up; their values never reach a log line or an error.

`persist` / `read_persisted` keep the last activated bundle (bytes and ETag) in
`persist_dir`, written to a temporary file, fsynced and renamed: a crash leaves the
old one or the new one, never half of either. A persisted bundle is verified again
when read, with the keys configured then.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass

import aiohttp

from ...config.bundle import BundleConfig
from .refusal import ARCHIVE_SIZE, DOWNLOAD, BundleRefused

BUNDLE_FILE = "bundle.tar.gz"
ETAG_FILE = "bundle.etag"


@dataclass(frozen=True, slots=True)
class Fetched:
    not_modified: bool
    raw: bytes = b""
    etag: str | None = None


def read_headers(path: str) -> dict[str, str]:
    """`Name: value` lines (blank lines and `#` comments skipped). Blocking."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            name, sep, value = text.partition(":")
            name = name.strip()
            if not sep or not name or not all(c.isalnum() or c in "-_" for c in name):
                raise ValueError(f"{path}:{number}: not a 'Name: value' header line")
            out[name] = value.strip()
    return out


class BundleClient:
    def __init__(self, config: BundleConfig) -> None:
        self._config = config
        self._session: aiohttp.ClientSession | None = None
        self._limit = config.max_total_bytes

    async def open(self) -> None:
        if self._session is not None:
            return
        ssl_ctx: ssl.SSLContext | bool = True
        if self._config.ca_file:
            ssl_ctx = await asyncio.to_thread(
                ssl.create_default_context, cafile=self._config.ca_file
            )
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._config.timeout_seconds),
            connector=aiohttp.TCPConnector(ssl=ssl_ctx, limit=2),
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def fetch(self, etag: str | None) -> Fetched:
        await self.open()
        assert self._session is not None
        headers: dict[str, str] = {}
        if self._config.headers_from_file:
            try:
                headers = await asyncio.to_thread(read_headers, self._config.headers_from_file)
            except (OSError, ValueError, UnicodeDecodeError):
                raise BundleRefused(DOWNLOAD, "headers_from_file cannot be read") from None
        if etag:
            headers["If-None-Match"] = etag
        try:
            async with self._session.get(
                self._config.url, headers=headers, allow_redirects=False
            ) as resp:
                if resp.status == 304:
                    return Fetched(not_modified=True, etag=etag)
                if resp.status != 200:
                    raise BundleRefused(DOWNLOAD, f"bundle server answered HTTP {resp.status}")
                length = resp.content_length
                if length is not None and length > self._limit:
                    raise BundleRefused(ARCHIVE_SIZE, f"bundle is {length} bytes")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > self._limit:
                        raise BundleRefused(ARCHIVE_SIZE, f"bundle is over {self._limit} bytes")
                return Fetched(False, bytes(body), resp.headers.get("ETag"))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise BundleRefused(
                DOWNLOAD, f"bundle download failed ({type(exc).__name__})"
            ) from None


def persist(directory: str, raw: bytes, etag: str | None) -> None:
    """Atomically replace the persisted bundle. Blocking."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name, content in ((BUNDLE_FILE, raw), (ETAG_FILE, (etag or "").encode("utf-8"))):
        final = os.path.join(directory, name)
        tmp = f"{final}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)


def read_persisted(directory: str) -> tuple[bytes, str | None] | None:
    """The persisted bundle and its ETag, or None when there is none. Blocking."""
    try:
        with open(os.path.join(directory, BUNDLE_FILE), "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return None
    try:
        with open(os.path.join(directory, ETAG_FILE), encoding="utf-8") as fh:
            etag = fh.read().strip() or None
    except (FileNotFoundError, UnicodeDecodeError):
        etag = None
    return raw, etag
