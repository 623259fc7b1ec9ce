"""Stage 6: forward an allowed request upstream and stream the answer back.

Takes the aiohttp request (for its body stream), the canonical target, the prepared
upstream headers and the one pooled client session; returns the response it has
streamed to the client. Bodies are streamed in both directions in bounded chunks, so
memory stays flat whatever the size. Failures map to reason codes:
connect refused / reset / TLS failure -> 502 (`UpstreamUnavailable`), no answer within
the read timeout -> 504 (`UpstreamTimeout`), a request body over the limit -> 413,
a request body that pauses longer than `body_idle` or takes longer than `body_total` in
all -> 408 (`body_idle_timeout`, `body_total_timeout`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from ..errors import BodyTooLarge, Rejection, RequestTimeout, UpstreamTimeout, UpstreamUnavailable
from .headers import downstream_headers

CHUNK = 64 * 1024


@dataclass(slots=True)
class ForwardResult:
    response: web.StreamResponse
    status: int
    aborted: bool = False  # the upstream broke off after the response had started


class _BodyLimit:
    """Wraps the client's body stream; stops at `limit` bytes, and when a piece takes
    longer than `idle` seconds or the whole body longer than `total`."""

    def __init__(
        self, content: aiohttp.StreamReader, limit: int, idle: float = 3600.0, total: float = 3600.0
    ) -> None:
        self.content = content
        self.limit = limit
        self.idle = idle
        self.total = total
        self.seen = 0
        self.exceeded = False
        self.timed_out: str | None = None
        self.refused: Rejection | None = None  # set on the stream by the connection

    def failure(self) -> Rejection | None:
        if self.exceeded:
            return BodyTooLarge("body_too_large")
        if self.timed_out is not None:
            return RequestTimeout(self.timed_out)
        return self.refused

    async def __aiter__(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.total
        while True:
            wait = min(self.idle, deadline - loop.time())
            try:
                async with asyncio.timeout(max(wait, 0)):
                    chunk = await self.content.readany()
            except Rejection as exc:  # e.g. chunk_extension_too_long
                self.refused = exc
                raise
            except TimeoutError:
                self.timed_out = "body_idle_timeout" if wait >= self.idle else "body_total_timeout"
                raise RequestTimeout(self.timed_out) from None
            if not chunk:
                return
            self.seen += len(chunk)
            if self.seen > self.limit:
                self.exceeded = True
                raise BodyTooLarge("body_too_large")
            yield chunk


def request_has_body(request: web.BaseRequest) -> bool:
    if request.headers.get("Transfer-Encoding"):
        return True
    length = request.headers.get("Content-Length")
    return bool(length) and length != "0"


async def forward(
    request: web.BaseRequest,
    *,
    upstream_url: str,
    target: str,
    headers: CIMultiDict[str],
    session: aiohttp.ClientSession,
    ssl_context: ssl.SSLContext | None,
    max_body_bytes: int,
    response_headers: dict[str, str] | None = None,
    body_idle: float = 3600.0,
    body_total: float = 3600.0,
) -> ForwardResult:
    length = request.content_length
    if length is not None and length > max_body_bytes:
        raise BodyTooLarge("body_too_large")
    body: _BodyLimit | None = None
    if request_has_body(request):
        body = _BodyLimit(request.content, max_body_bytes, body_idle, body_total)
    url = upstream_url + target
    try:
        upstream = await session.request(
            request.method,
            yarl_url(url),
            headers=headers,
            data=body.__aiter__() if body is not None else None,
            ssl=ssl_context if ssl_context is not None else True,
            allow_redirects=False,
            auto_decompress=False,
        )
    except Rejection:
        raise
    except TimeoutError:
        if body is not None and (failure := body.failure()) is not None:
            raise failure from None
        raise UpstreamTimeout("upstream_timeout") from None
    except aiohttp.ClientSSLError:
        raise UpstreamUnavailable("upstream_tls_error") from None
    except aiohttp.ClientConnectorError:
        raise UpstreamUnavailable("upstream_connect_failed") from None
    except (aiohttp.ClientError, OSError):
        if body is not None and (failure := body.failure()) is not None:
            raise failure from None
        raise UpstreamUnavailable("upstream_reset") from None
    async with upstream:
        if body is not None and (failure := body.failure()) is not None:
            raise failure
        resp = web.StreamResponse(
            status=upstream.status,
            reason=upstream.reason,
            headers=downstream_headers(upstream.headers, response_headers or {}),
        )
        if upstream.content_length is not None:
            # Bytes pass through undecoded (auto_decompress=False), so the length holds.
            resp.content_length = upstream.content_length
        try:
            first = await upstream.content.read(CHUNK)
        except TimeoutError:
            raise UpstreamTimeout("upstream_timeout") from None
        except (aiohttp.ClientError, OSError):
            raise UpstreamUnavailable("upstream_reset") from None
        await resp.prepare(request)
        try:
            if first:
                await resp.write(first)
                async for chunk in upstream.content.iter_chunked(CHUNK):
                    await resp.write(chunk)
            await resp.write_eof()
        except (TimeoutError, aiohttp.ClientError, OSError):
            # The status line is gone already; the only honest signal left is to cut
            # the connection so the client sees a truncated response.
            if request.transport is not None:
                request.transport.abort()
            return ForwardResult(resp, upstream.status, aborted=True)
        return ForwardResult(resp, upstream.status)


def yarl_url(url: str) -> URL:
    """The upstream URL, marked as already encoded: the canonical path must reach the
    upstream byte for byte, never re-quoted or normalized by the client library."""
    return URL(url, encoded=True)
