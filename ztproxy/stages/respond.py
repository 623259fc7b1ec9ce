"""What the client sees when a request is not forwarded.

A short JSON body with a generic message for the status and the request id, never the
reason code or any input; 401 answers carry RFC 6750's `WWW-Authenticate`; a policy's
own deny (status, body, response headers) is used as the policy wrote it, except that
its response headers pass the same hop-by-hop filter as an upstream's (no
Transfer-Encoding, Connection or Content-Length from a policy).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web

from ..errors import Rejection, public_message
from ..model import Decision
from .headers import response_headers_to_add


def error_response(
    status: int, request_id: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    body = json.dumps({"error": public_message(status), "request_id": request_id})
    resp = web.Response(status=status, text=body, content_type="application/json", headers=headers)
    resp.headers["Server"] = "ztproxy"  # not aiohttp's version string
    return resp


def www_authenticate(reason: str) -> str:
    # RFC 6750 section 3.1: no error code when the request carried no credential.
    if reason == "missing_token":
        return 'Bearer realm="ztproxy"'
    return 'Bearer realm="ztproxy", error="invalid_token"'


def rejection_response(exc: Rejection, request_id: str) -> web.Response:
    headers: dict[str, str] = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = www_authenticate(exc.reason)
    resp = error_response(exc.status, request_id, headers)
    if exc.status in (400, 408, 413, 431):
        resp.force_close()  # after a framing error the connection cannot be trusted
    return resp


def denied_response(decision: Decision, request_id: str) -> web.Response:
    status = decision.http_status or 403
    if not 400 <= status <= 599:
        status = 403
    headers = response_headers_to_add(decision.response_headers)
    if decision.body is not None:
        return web.Response(status=status, text=decision.body, headers=headers)
    return error_response(status, request_id, headers)
