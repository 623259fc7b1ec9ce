"""Review of issue 13, item 2: headers upstreams trust that the default strip list
(config/core.py, outside this review's files) still forwards. Each reached the echo
upstream over real mTLS on 249e017 and on the reviewed head. Strict xfail: it flips,
and must be unmarked, once DEFAULT_STRIPPED_HEADERS / _PREFIXES cover them."""

from __future__ import annotations

import json

from e2e_harness import StartProxy, open_route, raw_exchange

TRUSTED = [
    # AWS ALB mTLS passthrough: only x-amzn-mtls-clientcert is listed, not its siblings
    "X-Amzn-Mtls-Clientcert-Leaf: spoof",
    "X-Amzn-Mtls-Clientcert-Subject: CN=spoof",
    # Authelia / Authentik forward-auth identity
    "Remote-Groups: admins",
    "Remote-Email: a@b",
    "Remote-Name: admin",
    # Kong consumer identity
    "X-Consumer-Username: admin",
    "X-Consumer-ID: 1",
    "X-Credential-Identifier: admin",
    "X-Authenticated-Scope: admin",
    "X-Userinfo: e30",
    # client address and scheme spoofs read by Rack, Django, request-ip, Spring
    "X-Client-IP: 10.0.0.1",
    "True-Client-IP: 10.0.0.1",
    "X-Cluster-Client-IP: 10.0.0.1",
    "X-Forwarded-Ssl: off",
    "X-Forwarded-Scheme: http",
    "Front-End-Https: off",
    "X-Url-Scheme: http",
    "X-Original-Host: admin.internal",
    "X-Envoy-Original-Path: /admin",
]


async def test_default_strip_list_covers_more_trusted_headers(
    start_proxy: StartProxy, upstream: str
) -> None:
    run = await start_proxy(routes=[open_route(upstream)])
    lines = ["GET /payments/x HTTP/1.1", "Host: localhost", *TRUSTED, "Connection: close", "", ""]
    reply = await raw_exchange(run.proxy.port, run.ctx(), "\r\n".join(lines).encode())
    got = {k.lower() for k, _ in json.loads(reply.partition(b"\r\n\r\n")[2])["headers"]}
    leaked = [h for h in TRUSTED if h.split(":")[0].lower() in got]
    assert leaked == []
