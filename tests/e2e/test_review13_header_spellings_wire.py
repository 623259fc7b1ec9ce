"""Review of issue 13: "every spelling" of a stripped or asserted header. Over real
mTLS with the lab's echo upstream (it answers with the headers it received).

- lighttpd hands any non-alphanumeric byte of a header name to CGI/FastCGI/SCGI as "_"
  (`X.User`, `X~User` and `X_User` are all HTTP_X_USER); only "_" was folded, so
  `X.Client.Spiffe.Id: forged` reached the upstream beside the proxy's own header.
- an operator's `headers.strip` entry spelled with "_" (`x_internal_role`) strips
  nothing: config/core.py `parse_headers` only lowercases the entries, which are then
  compared with normalized names. Not fixed here (config is outside this review's
  files): strict xfail until `parse_headers` normalizes them as `_pass_headers` does.
"""

from __future__ import annotations

import json

from e2e_harness import Running, StartProxy, open_route, raw_exchange

SPELLINGS = [
    "X.Client.Spiffe.Id: forged",
    "x~user~subject: admin",
    "X.Original.URL: /admin",
    "X!Forwarded!User: admin",
    "Remote.User: admin",
    "X'Auth'Request'Email: a@b",
]


async def _upstream_headers(run: Running, *headers: str) -> list[list[str]]:
    lines = ["GET /payments/x HTTP/1.1", "Host: localhost", *headers, "Connection: close", "", ""]
    reply = await raw_exchange(run.proxy.port, run.ctx(), "\r\n".join(lines).encode())
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"200", reply
    return list(json.loads(body)["headers"])


async def test_stripped_headers_in_any_non_alphanumeric_spelling(
    start_proxy: StartProxy, upstream: str
) -> None:
    run = await start_proxy(routes=[open_route(upstream)])
    got = await _upstream_headers(run, *SPELLINGS, "X.Kept.Name: yes")
    folded = {"".join(c if c.isalnum() else "-" for c in k.lower()): v for k, v in got}
    assert folded["x-client-spiffe-id"] == "spiffe://corp.example/ns/prod/sa/checkout"
    for name in (
        "x-user-subject",
        "x-original-url",
        "x-forwarded-user",
        "remote-user",
        "x-auth-request-email",
    ):
        assert name not in folded, (name, got)
    assert [v for k, v in got if k.lower() == "x-client-spiffe-id"] == [
        "spiffe://corp.example/ns/prod/sa/checkout"
    ]
    # A header that is not stripped goes on, under its one dashed spelling.
    assert ["x-kept-name", "yes"] in got


async def test_operator_strip_entry_spelled_with_underscore(
    start_proxy: StartProxy, upstream: str
) -> None:
    run = await start_proxy(
        routes=[open_route(upstream)], extra={"headers": {"strip": ["x_internal_role"]}}
    )
    got = await _upstream_headers(run, "X-Internal-Role: admin")
    assert not [k for k, _ in got if k.lower() == "x-internal-role"], got
