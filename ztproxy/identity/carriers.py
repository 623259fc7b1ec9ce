"""Where tokens travel: the bearer headers, and where they must never be (the query).

Takes the request's headers and raw query string (untrusted); returns the compact token
from one header, or raises `Unauthenticated`:

- `multiple_tokens`: the header appears more than once (which one would the upstream
  or a log see?);
- `malformed_token`: not `Bearer <token68>` (the scheme is case-insensitive, RFC 7235);
- `token_in_query`: an `access_token` / `id_token` parameter, or any name or value that
  looks like a JWS (a base64url JSON header naming an `alg`). Query strings end up in
  access logs, browser history and Referer headers (RFC 6750 section 2.3, RFC 9700),
  so such a request is refused whatever the route says.
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import parse_qsl

from multidict import CIMultiDictProxy

from ..errors import Unauthenticated

_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_WORD = re.compile(r"[A-Za-z0-9_.-]+")
_QUERY_TOKEN_NAMES = frozenset({"access_token", "id_token", "device_token"})


def bearer_token(headers: CIMultiDictProxy[str], name: str) -> str | None:
    """The token of `name: Bearer <token>`, None when the header is absent."""
    values = headers.getall(name, ())
    if not values:
        return None
    if len(values) > 1:
        raise Unauthenticated("multiple_tokens", f"{len(values)} {name} headers")
    scheme, _, token = values[0].strip().partition(" ")
    token = token.strip(" ")
    if scheme.lower() != "bearer":
        raise Unauthenticated("malformed_token", f"{name} is not a Bearer credential")
    if not token or not token.isascii() or not _TOKEN68.fullmatch(token):
        raise Unauthenticated("malformed_token", f"{name} bearer value is not a token")
    return token


def _looks_like_jws(text: str) -> bool:
    """A run `header.payload.` whose header decodes to JSON naming an `alg`.
    Linear in the input (no backtracking regex over attacker-chosen text)."""
    for word in _WORD.findall(text):
        segments = word.split(".")
        # a header needs a non-empty payload after it and one more dot after that
        for i in range(len(segments) - 2):
            head = segments[i]
            # a JSON object starts with "{" then a quote or whitespace: "ey" or "ew"
            if len(head) < 8 or head[:2] not in ("ey", "ew") or not segments[i + 1]:
                continue
            try:
                decoded = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
            except (binascii.Error, ValueError):
                continue
            if b'"alg"' in decoded:
                return True
    return False


def check_query(raw_query: str) -> None:
    """Raise `token_in_query` when the query string carries a token."""
    if not raw_query:
        return
    if _looks_like_jws(raw_query):
        raise Unauthenticated("token_in_query", "JWS-like value")
    if "%" not in raw_query and "+" not in raw_query and "_token" not in raw_query.lower():
        return  # nothing is encoded, so the raw scan above saw every name and value
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        if name.strip().lower() in _QUERY_TOKEN_NAMES:
            raise Unauthenticated("token_in_query", "token parameter")
        if _looks_like_jws(name) or _looks_like_jws(value):
            raise Unauthenticated("token_in_query", "JWS-like value")
