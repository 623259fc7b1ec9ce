"""The remote engine: decisions from an OPA server over its Data API.

Takes the OPA URL, TLS files and a bearer-token file from config; for each decision
sends `POST /v1/data/<decision path>` with `{"input": ...}` and returns the raw
`result` (`engine.RawResult`; OPA's `{}` is undefined). Trusts OPA's answer only as
far as `result.parse_result` validates it.

Built on opa-python-client's `AsyncOpaClient` (its session, URL building, bearer
header and `_request`), extended here (`OpaDataClient`) where it falls short for a
proxy: a custom CA and client certificate for OPA over TLS (it only knows the system
CAs), a keep-alive connection pool with a bounded size, the connect timeout bounded
like the total, retries off (one try: the whole decision must fit in timeout_ms,
which `asyncio.timeout` enforces around it), a bounded response body, and an
HTTP-error response that still carries a `result` kept apart from a 5xx without one.
One client per process, opened in `start()`, closed in `close()`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from opa_client.opa_async import AsyncOpaClient

from . import strictjson
from .engine import ENGINE_ERROR, TIMEOUT, UNAVAILABLE, UNDEFINED, EngineError, RawResult

log = structlog.get_logger(__name__)

MAX_BODY = 1 << 20  # an OPA decision is small; anything larger is not one


def build_ssl_context(
    ca_file: str | None, cert_file: str | None, key_file: str | None
) -> ssl.SSLContext:
    """Blocking (reads files): call from a worker thread."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file and key_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


class OpaDataClient(AsyncOpaClient):  # type: ignore[misc]
    """AsyncOpaClient with our TLS context, pool, timeouts and a raw Data API call."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        pool_size: int = 64,
    ) -> None:
        parts = urlsplit(url)
        https = parts.scheme == "https"
        host = parts.hostname or "127.0.0.1"
        super().__init__(
            host=f"[{host}]" if ":" in host else host,
            port=parts.port or (443 if https else 80),
            ssl=https,
            token=token,
            retries=0,
            timeout=timeout_s,
        )
        self._ssl_context = ssl_context
        self._pool_size = pool_size

    async def _init_session(self) -> None:
        self._connector = aiohttp.TCPConnector(
            ssl=self._ssl_context if self.ssl and self._ssl_context else True,
            limit=self._pool_size,
            keepalive_timeout=30.0,
            ttl_dns_cache=60,
        )
        self._session = aiohttp.ClientSession(
            headers=self.headers,
            connector=self._connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout, connect=self.timeout),
            auto_decompress=True,
        )

    async def open(self) -> None:
        await self._init_session()

    @property
    def is_open(self) -> bool:
        return self._session is not None and not self._session.closed

    async def data(self, decision_path: str, input_doc: Mapping[str, Any]) -> RawResult:
        url = f"{self.root_url}/data/{decision_path}"
        async with self._request("POST", url, json={"input": input_doc}) as response:
            body = await _read_bounded(response)
            status = response.status
        try:
            answer = strictjson.loads(body)
        except strictjson.DuplicateMember as exc:
            # never last-wins: {"result": false, "result": true} is no answer at all
            return RawResult(
                defined=True, value=None, http_status=None, problem=f"OPA's answer has a {exc}"
            )
        except ValueError:
            raise EngineError(
                ENGINE_ERROR, f"OPA answered HTTP {status} with a body that is not JSON"
            ) from None
        if status != 200:
            if isinstance(answer, dict) and "result" in answer:
                return RawResult(defined=True, value=answer["result"], http_status=status)
            code = answer.get("code") if isinstance(answer, dict) else None
            raise EngineError(
                ENGINE_ERROR,
                f"OPA answered HTTP {status}" + (f" ({code})" if isinstance(code, str) else ""),
            )
        if not isinstance(answer, dict):
            raise EngineError(ENGINE_ERROR, "OPA answered with JSON that is not an object")
        if "result" not in answer:
            return UNDEFINED
        return RawResult(defined=True, value=answer["result"])


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_BODY:
            raise EngineError(ENGINE_ERROR, f"OPA answer larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _read_token(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read().strip()


class RemoteEngine:
    name = "opa"
    engine_name = "opa-rest"

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        token_file: str | None = None,
    ) -> None:
        self._url = url.rstrip("/")
        self._timeout = timeout_s
        self._tls = (ca_file, cert_file, key_file)
        self._token_file = token_file
        self._client: OpaDataClient | None = None
        parts = urlsplit(self._url)
        self._revision = f"opa:{parts.scheme}://{parts.netloc}"

    @property
    def revision(self) -> str:
        """OPA owns its policy; we name the server. (OPA's bundle revision would need
        `?provenance=true` on every call; see docs/rego-authors.md.)"""
        return self._revision

    @property
    def loaded(self) -> bool:
        return self._client is not None and self._client.is_open

    async def start(self) -> None:
        ctx = None
        if self._url.startswith("https://"):
            ctx = await asyncio.to_thread(build_ssl_context, *self._tls)
        token = await asyncio.to_thread(_read_token, self._token_file) if self._token_file else None
        client = OpaDataClient(self._url, timeout_s=self._timeout, token=token, ssl_context=ctx)
        await client.open()
        self._client = client
        log.info("policy_engine_started", engine=self.name, opa=self._revision)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close_connection()

    async def reload(self) -> bool:
        return True  # nothing to compile here; the decider clears its cache

    def changed_on_disk(self) -> bool:
        return False

    async def evaluate(self, decision_path: str, input_doc: Mapping[str, Any]) -> RawResult:
        client = self._client
        if client is None:
            raise EngineError(UNAVAILABLE, "OPA client not started")
        try:
            async with asyncio.timeout(self._timeout):
                return await client.data(decision_path, input_doc)
        except TimeoutError:
            raise EngineError(TIMEOUT, f"no answer within {int(self._timeout * 1000)} ms") from None
        except aiohttp.ClientConnectionError as exc:
            raise EngineError(UNAVAILABLE, f"OPA unreachable ({type(exc).__name__})") from None
        except aiohttp.ClientError as exc:
            raise EngineError(ENGINE_ERROR, f"OPA call failed ({type(exc).__name__})") from None
