"""Stage 6: forward an allowed request upstream and stream the answer back.

Takes the aiohttp request (for its body stream), the canonical target, the prepared
upstream headers and the one pooled client session; returns the response it has
streamed to the client. Bodies are streamed in both directions in bounded chunks, so
memory stays flat whatever the size. Failures map to reason codes:
connect refused / reset / TLS failure -> 502 (`UpstreamUnavailable`), no answer within
the read timeout -> 504 (`UpstreamTimeout`), a request body over the limit -> 413.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from ..errors import BodyTooLarge, UpstreamTimeout, UpstreamUnavailable
from .headers import downstream_headers

CHUNK = 64 * 1024


@dataclass(slots=True)
class ForwardResult:
    response: web.StreamResponse
    status: int
    aborted: bool = False  # the upstream broke off after the response had started


class _BodyLimit:
    """Wraps the client's body stream; stops at `limit` bytes."""

    def __init__(self, content: aiohttp.StreamReader, limit: int) -> None:
        self.content = content
        self.limit = limit
        self.seen = 0
        self.exceeded = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.content.iter_chunked(CHUNK):
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


async def forward(request: web.BaseRequest, *, upstream_url: str, target: str,
                  headers: CIMultiDict[str], session: aiohttp.ClientSession,
                  ssl_context: ssl.SSLContext | None, max_body_bytes: int,
                  response_headers: dict[str, str] | None = None) -> ForwardResult:
    length = request.content_length
    if length is not None and length > max_body_bytes:
        raise BodyTooLarge("body_too_large")
    body: _BodyLimit | None = None
    if request_has_body(request):
        body = _BodyLimit(request.content, max_body_bytes)
    url = upstream_url + target
    try:
        upstream = await session.request(
            request.method, yarl_url(url), headers=headers,
            data=body.__aiter__() if body is not None else None,
            ssl=ssl_context if ssl_context is not None else True,
            allow_redirects=False, auto_decompress=False,
        )
    except BodyTooLarge:
        raise
    except TimeoutError:
        raise UpstreamTimeout("upstream_timeout") from None
    except aiohttp.ClientSSLError:
        raise UpstreamUnavailable("upstream_tls_error") from None
    except aiohttp.ClientConnectorError:
        raise UpstreamUnavailable("upstream_connect_failed") from None
    except (aiohttp.ClientError, OSError):
        if body is not None and body.exceeded:
            raise BodyTooLarge("body_too_large") from None
        raise UpstreamUnavailable("upstream_reset") from None
    async with upstream:
        if body is not None and body.exceeded:
            raise BodyTooLarge("body_too_large")
        resp = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                  headers=downstream_headers(upstream.headers,
                                                             response_headers or {}))
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
