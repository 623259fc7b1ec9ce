"""Stage 2: parse the request into `RequestFacts` and match its route.

Takes what the HTTP parser produced (method, raw target, headers, version) plus the
peer address; returns the canonical `RequestFacts` or raises `BadRequest` /
`HeadersTooLarge` / `RouteNotFound`. It trusts nothing in the request: framing
ambiguities the C parser lets through (duplicate Host, duplicate Content-Length,
Transfer-Encoding together with Content-Length) are refused here.

Route matching: among routes whose `host` equals the request host (or have no host),
the longest `path_prefix` that matches on a segment boundary wins; a route with a host
beats one without. No match is a 404 (fail closed). The host is ASCII only (a
non-ASCII Host such as U+212A KELVIN SIGN, which lowercases to "k", is refused before
lowercasing) and loses one trailing dot ("pay.internal." is "pay.internal") before
matching; the policy sees the same host.

The method must be an exact token of upper-case letters (aiohttp's C parser already
insists; this holds whatever parser runs).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from datetime import datetime
from functools import lru_cache

from multidict import CIMultiDictProxy

from ..errors import BadRequest, HeadersTooLarge, RouteNotFound
from ..model import RequestFacts, Route
from .canonical import canonicalize
from .headers import normalize_name, visible_headers
from .policy_input import rfc3339_ms

# A DNS name or IPv4 address (ASCII letters, digits, dots, dashes, underscores), or a
# bracketed IPv6 literal; lowercased before the check.
_HOST_NAME = re.compile(r"[a-z0-9._-]+|\[[0-9a-f:.]+\]")


def _host(headers: CIMultiDictProxy[str]) -> str:
    hosts = headers.getall("Host", [])
    if len(hosts) > 1:
        raise BadRequest("duplicate_host")
    if not hosts or not hosts[0]:
        raise BadRequest("missing_host")
    value = hosts[0]
    return _host_name(value) if len(value) <= 255 else _parse_host(value)


def _parse_host(value: str) -> str:
    if not value.isascii():
        raise BadRequest("bad_host")
    host = value.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            raise BadRequest("bad_host")
        name, rest = host[: end + 1], host[end + 1 :]
    else:
        name, _, port = host.partition(":")
        rest = ":" + port if port or host.endswith(":") else ""
    if rest and (
        not rest.startswith(":") or not rest[1:].isdigit() or len(rest) > 6 or int(rest[1:]) > 65535
    ):
        raise BadRequest("bad_host")  # a port is 0-65535 (the upstream gets it as sent)
    if name.endswith(".") and not name.startswith("["):
        name = name[:-1]  # one trailing dot: the same DNS name, fully qualified
    if not _HOST_NAME.fullmatch(name) or name.endswith("."):
        raise BadRequest("bad_host")
    return name


# The same few Host values come on every request: the accepted ones are remembered
# (a refused one raises, and lru_cache keeps nothing for it).
_host_name = lru_cache(maxsize=1024)(_parse_host)


def _framing(headers: CIMultiDictProxy[str]) -> None:
    lengths = headers.getall("Content-Length", [])
    if len(lengths) > 1 or any("," in v for v in lengths):
        raise BadRequest("duplicate_content_length")
    if lengths and not lengths[0].strip().isdigit():
        raise BadRequest("bad_content_length")
    encodings = headers.getall("Transfer-Encoding", [])
    if encodings:
        if lengths:
            raise BadRequest("transfer_encoding_with_content_length")
        if [e.strip().lower() for e in encodings] != ["chunked"]:
            raise BadRequest("bad_transfer_encoding")


def _header_bytes(headers: CIMultiDictProxy[str]) -> int:
    return sum(map(len, headers.keys())) + sum(map(len, headers.values())) + 4 * len(headers)


def _prefix_matches(prefix: str, path: str) -> bool:
    if prefix == "/" or path == prefix:
        return True
    base = prefix.rstrip("/")
    return path == base or path.startswith(base + "/")


def match_route(routes: Sequence[Route], host: str, path: str) -> Route:
    best: Route | None = None
    best_key = (-1, -1)
    for route in routes:
        if route.host is not None and route.host != host:
            continue
        if not _prefix_matches(route.path_prefix, path):
            continue
        key = (1 if route.host is not None else 0, len(route.path_prefix.rstrip("/")))
        if key > best_key:
            best, best_key = route, key
    if best is None:
        raise RouteNotFound("no_route")
    return best


_METHOD = re.compile(r"[A-Z]{1,32}")
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"})


def upgrade_of(headers: CIMultiDictProxy[str]) -> str | None:
    """ "websocket" when the request asks for a WebSocket upgrade (Upgrade: websocket
    and Connection naming upgrade), else None."""
    value = headers.get("Upgrade")
    if value is None or value.strip().lower() != "websocket":
        return None
    for conn in headers.getall("Connection", []):
        if "upgrade" in (t.strip().lower() for t in conn.split(",")):
            return "websocket"
    return None


def build_request_facts(
    *,
    request_id: str,
    method: str,
    raw_target: str,
    version: str,
    headers: CIMultiDictProxy[str],
    source_address: str,
    now: datetime,
    routes: Sequence[Route],
    max_header_bytes: int,
    hidden_headers: Collection[str],
    strip_prefixes: tuple[str, ...] = (),
) -> RequestFacts:
    """`hidden_headers`: normalized names never shown to policy (credentials, the
    headers the proxy asserts and those it strips); `strip_prefixes`: so are names
    starting with one of these. A route's `pass_headers` are shown."""
    if _header_bytes(headers) > max_header_bytes:
        raise HeadersTooLarge("headers_too_large")
    if method not in _KNOWN_METHODS and not _METHOD.fullmatch(method):
        raise BadRequest("bad_method")
    if method == "CONNECT":
        raise BadRequest("connect_not_supported")
    _framing(headers)
    host = _host(headers)
    target = canonicalize(raw_target)
    route = match_route(routes, host, target.path)
    return RequestFacts(
        request_id=request_id,
        method=method,
        scheme="https",
        host=host,
        path=target.path,
        parsed_path=target.parsed_path,
        raw_query=target.raw_query,
        query=target.query,
        headers=visible_headers(headers, hidden_headers, strip_prefixes, route.pass_headers),
        protocol=version,
        time=now,
        route=route,
        source_address=source_address,
        time_text=rfc3339_ms(now),
        upgrade=upgrade_of(headers) if "Upgrade" in headers else None,
    )


__all__ = ["build_request_facts", "match_route", "normalize_name"]
