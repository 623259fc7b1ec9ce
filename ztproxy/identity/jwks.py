"""Where an issuer's JWKS comes from: an http(s) endpoint, a local file, or the config.

Each source takes nothing per call and returns a `Fetched` (the parsed document and the
issuer's Cache-Control max-age, if any) or raises `JwksFetchError(reason)` with a short
reason code for the log and the metrics. Sources do not cache and do not rate-limit:
`issuer_keys.IssuerKeys` does both.

What the HTTP source trusts: the TLS certificate of the endpoint (system roots, or the
issuer's `jwks_ca_file`), nothing else. It never follows redirects, reads at most
`MAX_JWKS_BYTES`, and gives up after `JWKS_TIMEOUT_SECONDS` in total (never a library
default). Documents are parsed with strict JSON (duplicate members rejected).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from . import strictjson

JWKS_TIMEOUT_SECONDS = 2.0
MAX_JWKS_BYTES = 512 * 1024


class JwksFetchError(Exception):
    """A JWKS could not be obtained. `reason` is a short code, never a secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Fetched:
    document: Any
    max_age: int | None = None  # seconds, from Cache-Control; None when not given


class KeySource(Protocol):
    async def fetch(self) -> Fetched: ...


def parse_cache_control(value: str | None) -> int | None:
    """max-age in seconds; 0 for no-store / no-cache; None when absent or unreadable."""
    if not value:
        return None
    max_age: int | None = None
    for part in value.split(","):
        name, _, arg = part.strip().partition("=")
        name = name.strip().lower()
        if name in ("no-store", "no-cache"):
            return 0
        if name == "max-age":
            arg = arg.strip().strip('"')
            if arg.isdigit() and len(arg) <= 10:
                max_age = int(arg)
    return max_age


def _parse(body: bytes) -> Any:
    try:
        return strictjson.loads(body)
    except strictjson.DuplicateMember:
        raise JwksFetchError("duplicate_member") from None
    except ValueError:
        raise JwksFetchError("invalid_json") from None


class HttpKeySource:
    """GET the issuer's `jwks_uri` with the authenticator's own ClientSession."""

    def __init__(
        self, uri: str, session: Callable[[], aiohttp.ClientSession], ssl: Any = True
    ) -> None:
        self._uri = uri
        self._session = session
        self.ssl = ssl  # an ssl.SSLContext for a private CA, or True for the system roots

    async def fetch(self) -> Fetched:
        timeout = aiohttp.ClientTimeout(total=JWKS_TIMEOUT_SECONDS)
        try:
            async with self._session().get(
                self._uri,
                timeout=timeout,
                ssl=self.ssl,
                allow_redirects=False,
                headers={"Accept": "application/json, application/jwk-set+json"},
            ) as resp:
                if resp.status != 200:
                    raise JwksFetchError(f"http_{resp.status}")
                if (resp.content_length or 0) > MAX_JWKS_BYTES:
                    raise JwksFetchError("too_large")
                body = await _read_bounded(resp.content)
                max_age = parse_cache_control(resp.headers.get("Cache-Control"))
        except TimeoutError:
            raise JwksFetchError("timeout") from None
        except aiohttp.ClientSSLError:
            raise JwksFetchError("tls") from None
        except aiohttp.ClientError:
            raise JwksFetchError("connection") from None
        return Fetched(_parse(body), max_age)


async def _read_bounded(stream: aiohttp.StreamReader) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(65536):
        size += len(chunk)
        if size > MAX_JWKS_BYTES:
            raise JwksFetchError("too_large")
        chunks.append(chunk)
    return b"".join(chunks)


class FileKeySource:
    """Re-read a local JWKS file (off the event loop), so rotation by file works too."""

    def __init__(self, path: str) -> None:
        self._path = Path(path)

    async def fetch(self) -> Fetched:
        try:
            body = await asyncio.to_thread(self._read)
        except OSError:
            raise JwksFetchError("file_unreadable") from None
        return Fetched(_parse(body))

    def _read(self) -> bytes:
        with self._path.open("rb") as fh:
            body = fh.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise JwksFetchError("too_large")
        return body


class InlineKeySource:
    """Keys written in the config: always available, never change until reload."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._document = document

    async def fetch(self) -> Fetched:
        return Fetched(self._document)
