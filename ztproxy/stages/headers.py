"""Header hygiene, both directions.

- `visible_headers`: the request headers the policy may see (no hop-by-hop, no
  credentials, none of the headers the proxy asserts).
- `upstream_headers`: what goes to the upstream: the incoming headers without
  hop-by-hop headers, without any header named in `Connection` (never Host: it goes on
  in the form the router and the policy saw, `upstream_host`), without credential
  headers (unless the route forwards the user token), and without every spelling of the
  asserted headers (`X-User`, `x_user`, `X-USER` all normalize to `x-user`); then the
  asserted headers set from verified data, and the policy's extra headers, which may
  never replace an asserted or stripped one.
- `downstream_headers`: the upstream response headers minus hop-by-hop ones.

Names are compared after `normalize_name`: lowercase, `_` read as `-`, because some
servers (CGI, WSGI, nginx with underscores_in_headers) read them as the same header.
A name is stripped when it is in the strip set or starts with one of the strip
prefixes, unless the route passes it through (`Route.pass_headers`).

Header values must be UTF-8 (the C parser hands undecodable bytes over as surrogate
escapes): anything else is a 400 `header_not_utf8`. Values the proxy asserts from
token claims must be header-safe (no control byte, no CR/LF/NUL): else 401
`claim_not_header_safe`, checked before the policy is asked.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterable, Mapping

from multidict import CIMultiDict, CIMultiDictProxy

from ..config.core import HeadersConfig
from ..errors import BadRequest, Unauthenticated
from ..model import Credentials, PeerIdentity

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "http2-settings",
    }
)

# Never shown to policy, never logged: credential carriers.
BASE_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


_NOT_ALNUM = re.compile(r"[^a-z0-9]")


@functools.lru_cache(maxsize=4096)
def normalize_name(name: str) -> str:
    """Lowercase, and every character other than a letter or digit read as "-":
    lighttpd hands `X.User`, `X~User` and `X_User` to CGI/FastCGI as `HTTP_X_USER`.
    Header names repeat from request to request: the normal form is cached."""
    return _NOT_ALNUM.sub("-", name.strip().lower())


def connection_named(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    named: set[str] = set()
    for value in headers.getall("Connection", []):
        for token in value.split(","):
            token = normalize_name(token)
            if token:
                named.add(token)
    return frozenset(named)


def check_utf8(value: str) -> None:
    """A header value the C parser decoded with surrogate escapes was not UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("header_not_utf8") from None


def visible_headers(
    headers: CIMultiDictProxy[str],
    hidden: Collection[str],
    prefixes: tuple[str, ...] = (),
    passed: frozenset[str] = frozenset(),
) -> dict[str, tuple[str, ...]]:
    """The headers the policy sees; refuses a value that is not UTF-8 (every header is
    looked at here, before anything else reads the values)."""
    dropped = connection_named(headers) if "Connection" in headers else frozenset()
    never = _never_visible(hidden if isinstance(hidden, frozenset) else frozenset(hidden))
    if passed:
        never = never - passed
    out: dict[str, tuple[str, ...]] = {}
    for name, value in headers.items():
        if not value.isascii():
            check_utf8(value)
        norm = normalize_name(name)
        if norm in never or norm in dropped:
            continue
        if prefixes and norm.startswith(prefixes) and norm not in passed:
            continue
        key = name.lower()
        seen = out.get(key)
        out[key] = (value,) if seen is None else (*seen, value)
    return out


@functools.lru_cache(maxsize=64)
def _never_visible(hidden: frozenset[str]) -> frozenset[str]:
    """Hop-by-hop, credentials and `hidden` as one set (one per config: `hidden` is the
    pipeline's own frozenset)."""
    return HOP_BY_HOP | BASE_CREDENTIAL_HEADERS | hidden


def upstream_host(value: str) -> str:
    """The Host header the upstream gets: the one the request stage accepted (ASCII,
    one Host) in the form the router and the policy saw (lowercase, one trailing dot
    stripped), its port, if any, kept."""
    host = value.strip().lower()
    if host.startswith("["):
        return host
    name, sep, port = host.partition(":")
    return (name[:-1] if name.endswith(".") else name) + sep + port


def upstream_headers(
    headers: CIMultiDictProxy[str],
    *,
    stripped: Collection[str],
    credential_headers: Collection[str],
    asserted: Mapping[str, str],
    policy_headers: Mapping[str, str] = {},
    keep: Iterable[str] = (),
    strip_prefixes: tuple[str, ...] = (),
    passed: frozenset[str] = frozenset(),
) -> CIMultiDict[str]:
    """`stripped`: normalized names removed in every spelling, and so is every name
    starting with one of `strip_prefixes`, unless it is in `passed` (the route's
    pass-through list; never an asserted name); `asserted`: the proxy's own headers
    (name -> value), set, never appended; `keep`: normalized credential names the route
    forwards (e.g. "authorization")."""
    dropped = connection_named(headers) if "Connection" in headers else frozenset()
    keep_set = frozenset(keep) if keep else frozenset()
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        norm = normalize_name(name)
        if norm == "host":
            # Never dropped (not even when named in Connection) and sent as the policy
            # saw it: lowercase, without the one trailing dot the router strips.
            out.add(name, upstream_host(value))
            continue
        if norm in HOP_BY_HOP or norm in dropped or norm in asserted:
            continue
        if (
            norm in stripped or (strip_prefixes and norm.startswith(strip_prefixes))
        ) and norm not in passed:
            continue
        if norm in credential_headers and norm not in keep_set:
            continue
        if norm != name.lower():
            # A header spelled with "_" (or another non-alphanumeric) that is not
            # stripped is forwarded under its canonical dashed name, so the upstream
            # cannot read two spellings.
            name = norm
        out.add(name, value)
    for name, value in asserted.items():
        out[name] = value
    if not policy_headers:
        return out
    protected = frozenset(stripped) | frozenset(asserted) | HOP_BY_HOP
    for name, value in policy_headers.items():
        norm = normalize_name(name)
        if norm in protected or norm in credential_headers or norm == "host":
            continue
        if strip_prefixes and norm.startswith(strip_prefixes):
            continue
        out[norm] = value
    return out


def response_headers_to_add(extra: Mapping[str, str]) -> dict[str, str]:
    """A policy's `response_headers_to_add` without hop-by-hop headers or a
    Content-Length (the proxy frames the response itself)."""
    return {
        name: value
        for name, value in extra.items()
        if normalize_name(name) not in HOP_BY_HOP and normalize_name(name) != "content-length"
    }


def downstream_headers(
    headers: CIMultiDictProxy[str], extra: Mapping[str, str] = {}
) -> CIMultiDict[str]:
    dropped = connection_named(headers) if "Connection" in headers else frozenset()
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        norm = normalize_name(name)
        if norm in HOP_BY_HOP or norm in dropped or norm == "content-length":
            continue
        out.add(name, value)
    for name, value in response_headers_to_add(extra).items():
        out[name] = value
    return out


# Control bytes (CR, LF, NUL, TAB and the rest, DEL) and lone surrogates, which no
# header can carry.
_NOT_HEADER_SAFE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def check_claims_header_safe(creds: Credentials) -> None:
    """The claims the proxy asserts as headers (user subject and issuer, device id)
    must be writable as header values: a 401 before the policy is asked, never an
    allow that fails later."""
    user, device = creds.user, creds.device
    for value in ((user.subject, user.issuer) if user is not None else ()) + (
        (device.device_id,) if device is not None else ()
    ):
        if not isinstance(value, str) or _NOT_HEADER_SAFE.search(value):
            raise Unauthenticated("claim_not_header_safe")


def asserted_headers(
    names: HeadersConfig,
    peer: PeerIdentity | None,
    creds: Credentials,
    source_address: str,
    request_id: str,
) -> dict[str, str]:
    """The identity headers the proxy sets, from verified data only."""
    if peer is None:  # the pipeline never forwards without a peer identity
        raise ValueError("no peer identity")
    out = {
        names.spiffe_id: peer.spiffe_id,
        names.cert_sha256: peer.fingerprint_sha256,
        names.xfcc: f"Hash={peer.fingerprint_sha256};URI={peer.spiffe_id}",
        names.forwarded_for: source_address,
        names.request_id: request_id,
        "x-forwarded-proto": "https",
    }
    if creds.user is not None:
        out[names.user_subject] = creds.user.subject
        out[names.user_issuer] = creds.user.issuer
    if creds.device is not None:
        out[names.device_id] = creds.device.device_id
    return out
