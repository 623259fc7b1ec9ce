"""The one exception tree of the request pipeline.

Every failure a stage can report is a `Rejection`: it carries the HTTP status the
client gets and a stable, machine-readable reason code that goes to the log, the
metrics and the audit record. The client only ever sees a generic message for the
status (see `public_message`), never the reason, never any input.

    Rejection (status, reason)
    |-- BadRequest            400  malformed or ambiguous request (path, framing, host)
    |   |-- HeadersTooLarge   431
    |   `-- BodyTooLarge      413
    |-- RequestTimeout        408  headers or body too slow (slowloris)
    |-- TooManyRequests       429  the caller holds its share of the upstream pool
    |-- RouteNotFound         404  no route matches host + path (fail closed)
    |-- Unauthenticated       401  missing / invalid user or device token
    |-- Forbidden             403  the policy said no, or its result was invalid
    |-- ServiceUnavailable    503  a dependency we must not skip is down: policy
    |                              engine, issuer keys not loaded, audit log unwritable
    |-- UpstreamUnavailable   502  upstream refused / reset / TLS failed
    `-- UpstreamTimeout       504  upstream did not answer within its deadline

`ConfigError` is separate: it is raised before anything serves and lists every
problem with its key path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http import HTTPStatus

_PUBLIC_MESSAGES: Mapping[int, str] = {
    400: "bad request",
    401: "authentication required",
    403: "access denied",
    404: "no route",
    408: "request timeout",
    413: "request body too large",
    429: "too many requests",
    431: "request headers too large",
    500: "internal error",
    502: "upstream unavailable",
    503: "service unavailable",
    504: "upstream timeout",
}


def public_message(status: int) -> str:
    """The generic text a client sees for a status: never the reason code."""
    if status in _PUBLIC_MESSAGES:
        return _PUBLIC_MESSAGES[status]
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"


class Rejection(Exception):  # noqa: N818 - a rejection is an outcome, not a bug
    """A request that must not be forwarded. `reason` is a stable code."""

    status: int = 500

    def __init__(self, reason: str, detail: str = "", *, status: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail  # for the log only; must never contain a secret
        if status is not None:
            self.status = status


class BadRequest(Rejection):
    status = 400


class HeadersTooLarge(BadRequest):
    status = 431


class BodyTooLarge(BadRequest):
    status = 413


class RequestTimeout(Rejection):
    status = 408


class TooManyRequests(Rejection):
    status = 429


class RouteNotFound(Rejection):
    status = 404


class Unauthenticated(Rejection):
    status = 401


class Forbidden(Rejection):
    status = 403


class ServiceUnavailable(Rejection):
    status = 503


class UpstreamUnavailable(Rejection):
    status = 502


class UpstreamTimeout(Rejection):
    status = 504


class ConfigError(Exception):
    """A config that cannot be used. `problems` are "key.path: what is wrong"."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))
