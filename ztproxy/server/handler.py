"""aiohttp's connection handler, with its parse-error path brought into the pipeline.

aiohttp's C parser (llhttp) refuses malformed requests itself (obsolete line folding,
bad chunking, invalid header bytes, lines over the limit) and answers them through
`RequestHandler.handle_error`, before any handler code runs. Here that answer gets the
same short JSON body as every other error and, above all, an audit record: a bad
request is never invisible to the auditor.

It also holds the line against slow clients (slowloris): from a connection's first byte
(or the first byte of its next request) to the end of the request headers, a client
has `timeouts.request_header_seconds`; then it gets a 408 `request_header_timeout`,
audited, and the connection is closed. At most `limits.max_header_phase_per_source`
connections of one source address may be in that phase at once; one more is answered
503 `header_phase_limit` and closed. And it measures chunk extensions
(`framing.ChunkExtensionGuard`): a request with one longer than
`limits.max_chunk_extension_bytes` gets its body stream failed with 400
`chunk_extension_too_long`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.http_parser import RawRequestMessage
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from ..errors import BadRequest, public_message
from ..pipeline import Pipeline
from ..stages.respond import error_response
from .acceptor import connection_state
from .framing import CHUNKED, UPGRADE, ChunkExtensionGuard


def parse_error_reason(exc: BaseException | None, status: int) -> tuple[int, str]:
    if isinstance(exc, http_exceptions.LineTooLong):
        return 431, "header_line_too_long"
    if isinstance(exc, http_exceptions.BadHttpMethod):
        return 400, "bad_method"
    if isinstance(exc, http_exceptions.BadStatusLine):
        return 400, "bad_request_line"
    if isinstance(exc, http_exceptions.InvalidHeader):
        return 400, "bad_header"
    if isinstance(exc, (http_exceptions.TransferEncodingError, http_exceptions.ContentLengthError)):
        return 400, "bad_framing"
    if isinstance(exc, http_exceptions.BadHttpMessage):
        if "header" in str(exc).lower() and "too" in str(exc).lower():
            return 431, "too_many_headers"
        return 400, "bad_framing"
    if status >= 500:
        return 500, "internal_error"
    return status, "bad_request"


def _framing(msg: RawRequestMessage) -> int:
    if msg.upgrade:
        return UPGRADE
    if msg.chunked:
        return CHUNKED
    length = msg.headers.get("Content-Length")
    if length is None:
        return 0
    length = length.strip()
    return int(length) if length.isdigit() else UPGRADE  # UPGRADE: stop watching


class AuditingRequestHandler(RequestHandler):
    def __init__(
        self,
        manager: web.Server,
        *,
        pipeline: Pipeline,
        loop: asyncio.AbstractEventLoop,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._zt_pipeline = pipeline
        self._zt_config = pipeline.runtime.current.config  # a reload applies to new connections
        self._zt_loop = loop
        self._zt_source = ""
        self._zt_timer: asyncio.TimerHandle | None = None
        self._zt_in_phase = False
        self._zt_guard = ChunkExtensionGuard(self._zt_config.limits.max_chunk_extension_bytes)

    # -- the header phase ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peername = transport.get_extra_info("peername")
        self._zt_source = peername[0] if peername else ""
        self._zt_phase_start()

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        closing = self._force_close or self._close
        super().data_received(data)
        guard = self._zt_guard
        if guard.watching and not closing:
            self._zt_watch(guard, self._request_count - before, data)
        if self._request_count != before:
            self._zt_phase_end()
        elif (
            data
            and not self._zt_in_phase
            and self._current_request is None
            and not self._messages
            and not self._upgraded
            and not self._force_close
        ):
            self._zt_phase_start()  # the first bytes of the next request on this connection

    def _zt_watch(self, guard: ChunkExtensionGuard, new: int, data: bytes) -> None:
        if new:
            for msg, payload in list(self._messages)[-new:]:
                if isinstance(msg, RawRequestMessage):
                    guard.message(_framing(msg), payload)
                else:  # a parse error: the parser answers it
                    guard.stop()
                    return
        payload = guard.feed(data)
        if payload is not None:
            payload.set_exception(BadRequest("chunk_extension_too_long"))

    def connection_lost(self, exc: BaseException | None) -> None:
        self._zt_phase_end()
        super().connection_lost(exc)

    def _zt_phase_start(self) -> None:
        pipeline = self._zt_pipeline
        counts = pipeline.header_phase
        held = counts.get(self._zt_source, 0)
        if held >= self._zt_config.limits.max_header_phase_per_source:
            self._zt_refuse(503, "header_phase_limit")
            return
        counts[self._zt_source] = held + 1
        self._zt_in_phase = True
        self._zt_timer = self._zt_loop.call_later(
            self._zt_config.timeouts.request_header_seconds, self._zt_header_timeout
        )

    def _zt_phase_end(self) -> None:
        if self._zt_timer is not None:
            self._zt_timer.cancel()
            self._zt_timer = None
        if self._zt_in_phase:
            self._zt_in_phase = False
            counts = self._zt_pipeline.header_phase
            left = counts.get(self._zt_source, 1) - 1
            if left > 0:
                counts[self._zt_source] = left
            else:
                counts.pop(self._zt_source, None)

    def _zt_header_timeout(self) -> None:
        self._zt_timer = None
        self._zt_phase_end()
        self._zt_refuse(408, "request_header_timeout")

    def _zt_refuse(self, status: int, reason: str) -> None:
        """Answer `status` before any request was parsed, audit it, close."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        request_id = self._zt_pipeline.outcome.record_unparsable(
            self._zt_source, self._zt_peer(), status, reason
        )
        body = json.dumps({"error": public_message(status), "request_id": request_id}).encode()
        transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\nServer: ztproxy\r\n\r\n"
            % (status, public_message(status).title().encode(), len(body))
            + body
        )
        self.force_close()
        transport.close()

    def _zt_peer(self) -> Any:
        state = connection_state(self)
        return state.validated.peer if state is not None else None

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        status, reason = parse_error_reason(exc, status)
        transport = self.transport
        state = connection_state(self)
        peer = state.validated.peer if state is not None else None
        peername = transport.get_extra_info("peername") if transport else None
        request_id = self._zt_pipeline.outcome.record_unparsable(
            peername[0] if peername else "", peer, status, reason
        )
        resp = error_response(status, request_id)
        resp.force_close()
        return resp
