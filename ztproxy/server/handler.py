"""aiohttp's connection handler, with its parse-error path brought into the pipeline.

aiohttp's C parser (llhttp) refuses malformed requests itself (obsolete line folding,
bad chunking, invalid header bytes, lines over the limit) and answers them through
`RequestHandler.handle_error`, before any handler code runs. Here that answer gets the
same short JSON body as every other error and, above all, an audit record: a bad
request is never invisible to the auditor.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from ..pipeline import Pipeline
from ..stages.respond import error_response
from .acceptor import connection_state


def parse_error_reason(exc: BaseException | None, status: int) -> tuple[int, str]:
    if isinstance(exc, http_exceptions.LineTooLong):
        return 431, "header_line_too_long"
    if isinstance(exc, http_exceptions.BadHttpMethod):
        return 400, "bad_method"
    if isinstance(exc, http_exceptions.BadStatusLine):
        return 400, "bad_request_line"
    if isinstance(exc, http_exceptions.InvalidHeader):
        return 400, "bad_header"
    if isinstance(exc, (http_exceptions.TransferEncodingError,
                        http_exceptions.ContentLengthError)):
        return 400, "bad_framing"
    if isinstance(exc, http_exceptions.BadHttpMessage):
        if "header" in str(exc).lower() and "too" in str(exc).lower():
            return 431, "too_many_headers"
        return 400, "bad_framing"
    if status >= 500:
        return 500, "internal_error"
    return status, "bad_request"


class AuditingRequestHandler(RequestHandler):
    def __init__(self, manager: web.Server, *, pipeline: Pipeline,
                 loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._zt_pipeline = pipeline

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        status, reason = parse_error_reason(exc, status)
        transport = self.transport
        state = connection_state(self)
        peer = state.validated.peer if state is not None else None
        peername = transport.get_extra_info("peername") if transport else None
        request_id = self._zt_pipeline.outcome.record_unparsable(
            peername[0] if peername else "", peer, status, reason)
        resp = error_response(status, request_id)
        resp.force_close()
        return resp
