"""Issue 13 ("what the policy sees is what the upstream gets"), over real mTLS on
loopback with the lab's echo upstream, which answers with the exact target and
headers it received. Each test is named after the finding it replays and failed on
the old code (249e017)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from e2e_harness import Running, StartProxy, open_route, raw_exchange


def _split(reply: bytes) -> tuple[int, bytes, bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


async def _raw(run: Running, request: bytes) -> tuple[int, bytes, bytes]:
    return _split(await raw_exchange(run.proxy.port, run.ctx(), request))


def _get(target: str, *headers: str, host: str = "localhost") -> bytes:
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", *headers, "Connection: close", "", ""]
    return "\r\n".join(lines).encode()


async def _last(run: Running) -> dict[str, Any]:
    return [r for r in await run.records() if r.get("kind") == "request"][-1]


# -- 1. percent-encoded unreserved characters -----------------------------------------


async def test_encoded_unreserved_cannot_skip_the_route_that_needs_a_user(
    start_proxy: StartProxy, upstream: str
) -> None:
    run = await start_proxy(
        routes=[
            open_route(upstream, name="admin", path_prefix="/payments/admin", user="required"),
            open_route(upstream),
        ]
    )
    run.sent += 1
    status, _, _ = await _raw(run, _get("/payments/%61dmin/users"))
    assert status == 401  # the admin route's user requirement, not the open route
    rec = await _last(run)
    assert (rec["route"], rec["path"]) == ("admin", "/payments/admin/users")


async def test_encoded_unreserved_cannot_pass_a_path_rule(
    start_proxy: StartProxy, upstream: str
) -> None:
    run = await start_proxy(routes=[open_route(upstream)])
    run.sent += 1
    status, _, _ = await _raw(run, _get("/payments/%66orbidden/x"))
    assert status == 403
    assert (await _last(run))["path"] == "/payments/forbidden/x"


async def test_upstream_receives_the_normalized_target(
    start_proxy: StartProxy, upstream: str
) -> None:
    run = await start_proxy(routes=[open_route(upstream)])
    run.sent += 1
    status, _, body = await _raw(run, _get("/payments/%61b%7e/caf%c3%a9%20x?q=%62%2f"))
    assert status == 200, body
    assert json.loads(body)["raw_path"] == "/payments/ab~/caf%C3%A9%20x?q=b%2F"
    assert (await _last(run))["path"] == "/payments/ab~/caf%C3%A9%20x"


# -- 2. the default strip list --------------------------------------------------------

_SPOOFED = [
    "X-SSL-Client-Cert: spoof",
    "X-Client-Cert: spoof",
    "ssl-client-subject-dn: CN=spoof",
    "X-SSL-Client-S-DN: CN=spoof",
    "X-ARR-ClientCert: spoof",
    "x_ssl_client_verify: SUCCESS",
    "X-Client-Cert-Chain: spoof",
    "SSL_CLIENT_I_DN: CN=spoof",
    "X-Original-URL: /admin",
    "X-Rewrite-URL: /admin",
    "X-Forwarded-Uri: /admin",
    "X-Forwarded-Prefix: /admin",
    "X-HTTP-Method-Override: DELETE",
    "x-method-override: DELETE",
    "X_HTTP_METHOD: DELETE",
    "X-Original-Method: DELETE",
    "X-Forwarded-User: spoof",
    "X-Auth-Request-User: spoof",
    "X-Auth-Request-Email: spoof",
    "X-AUTH-REQUEST-GROUPS: spoof",
    "X-Remote-User: spoof",
    "Remote-User: spoof",
    "remote_user: spoof",
    "X-Forwarded-Email: spoof",
    "X-Forwarded-Groups: spoof",
]


async def test_headers_upstreams_trust_are_stripped_in_every_spelling(
    start_proxy: StartProxy, upstream: str
) -> None:
    run = await start_proxy(routes=[open_route(upstream)])
    status, _, body = await _raw(run, _get("/payments/x", *_SPOOFED))
    assert status == 200, body
    for name, value in json.loads(body)["headers"]:
        assert "spoof" not in value and "/admin" not in value and value != "DELETE", name


async def test_a_route_passes_a_stripped_header_through_when_told(
    start_proxy: StartProxy, upstream: str
) -> None:
    run = await start_proxy(routes=[open_route(upstream, pass_headers=["x-forwarded-prefix"])])
    status, _, body = await _raw(
        run, _get("/payments/x", "X-Forwarded-Prefix: /pay", "X-Original-URL: /admin")
    )
    assert status == 200, body
    got = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert got["x-forwarded-prefix"] == "/pay" and "x-original-url" not in got


# -- 3. header values that are not UTF-8 ----------------------------------------------


async def test_non_utf8_header_value_is_400_and_audited(
    start_proxy: StartProxy, upstream: str
) -> None:
    run = await start_proxy(routes=[open_route(upstream)])
    run.sent += 1
    raw = _get("/payments/x").replace(b"Connection", b"X-Note: caf\xe9 \xff\r\nConnection")
    status, _, body = await _raw(run, raw)
    assert status == 400 and b"Traceback" not in body
    rec = await _last(run)
    assert (rec["reason"], rec["decision"], rec["status"]) == ("header_not_utf8", "deny", 400)


# -- 4. claims asserted as headers ----------------------------------------------------


async def test_claim_with_crlf_is_401_not_an_allow_with_500(
    start_proxy: StartProxy, upstream: str
) -> None:
    run = await start_proxy(routes=[open_route(upstream, user="required")])
    for sub in ("alice\r\nx-admin: 1", "bob\x00", "eve\x7f"):
        status, _, _ = await run.request(
            "GET", "/payments/x", headers={"Authorization": f"Bearer {run.user_token(sub)}"}
        )
        assert status == 401
        rec = await _last(run)
        assert (rec["reason"], rec["decision"], rec["status"]) == (
            "claim_not_header_safe",
            "deny",
            401,
        )
        assert rec.get("policy_input_sha256") is None  # the policy was never asked


# -- 7. a JWT in the path -------------------------------------------------------------


async def test_jwt_in_the_path_is_digested_in_the_audit_record(
    start_proxy: StartProxy, upstream: str
) -> None:
    run = await start_proxy(routes=[open_route(upstream)])
    token = run.user_token()
    status, _, body = await run.request("GET", f"/payments/t/{token}/x")
    assert status == 200
    assert json.loads(body)["raw_path"] == f"/payments/t/{token}/x"  # forwarded as is
    rec = await _last(run)
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert rec["path"] == f"/payments/t/[jwt:sha256:{digest}]/x"
    assert token not in json.dumps(await run.records())


# -- 11. smaller ----------------------------------------------------------------------

_DENY_POLICY = """
package ztproxy.authz

import rego.v1

decision := {"allowed": false, "http_status": 403, "body": "no",
             "response_headers_to_add": {"transfer-encoding": "chunked",
                                         "content-length": "999", "connection": "x",
                                         "x-why": "because"}}
"""


async def test_deny_response_headers_pass_the_hop_by_hop_filter(
    start_proxy: StartProxy, upstream: str, tmp_path: Path
) -> None:
    policy = tmp_path / "deny"
    policy.mkdir()
    (policy / "authz.rego").write_text(_DENY_POLICY)
    run = await start_proxy(routes=[open_route(upstream)], policy_dirs=[policy])
    status, head, body = await _raw(run, _get("/payments/x"))
    assert status == 403 and body == b"no"
    lower = head.lower()
    assert b"transfer-encoding" not in lower and b"content-length: 999" not in lower
    assert b"connection: x" not in lower and b"x-why: because" in lower


async def test_kelvin_sign_host_is_refused(start_proxy: StartProxy, upstream: str) -> None:
    run = await start_proxy(
        routes=[
            open_route(upstream, name="k", host="kelvin.internal", user="required"),
            open_route(upstream, path_prefix="/"),
        ]
    )
    run.sent += 1
    raw = (
        "GET /payments/x HTTP/1.1\r\nHost: \u212aelvin.internal\r\nConnection: close\r\n\r\n"
    ).encode()
    status, _, _ = await _raw(run, raw)
    assert status == 400
    rec = await _last(run)
    assert rec["reason"] == "bad_host" and rec["host"] == "\\u212aelvin.internal"


async def test_one_trailing_dot_selects_the_same_route(
    start_proxy: StartProxy, upstream: str
) -> None:
    run = await start_proxy(
        routes=[
            open_route(upstream, name="pay", host="pay.internal", user="required"),
            open_route(upstream, path_prefix="/"),
        ]
    )
    run.sent += 2
    status, _, _ = await _raw(run, _get("/payments/x", host="pay.internal."))
    assert status == 401
    assert (await _last(run))["route"] == "pay"
    status, _, _ = await _raw(run, _get("/payments/x", host="pay.internal.."))
    assert status == 400


async def test_404_and_400_records_carry_what_was_parsed(
    start_proxy: StartProxy, upstream: str
) -> None:
    run = await start_proxy(routes=[open_route(upstream)])
    run.sent += 2
    status, _, _ = await _raw(run, _get("/nowhere/x?token=secret"))
    assert status == 404
    rec = await _last(run)
    assert (rec["method"], rec["host"], rec["path"]) == ("GET", "localhost", "/nowhere/x")
    status, _, _ = await _raw(run, _get("/payments/%2e%2e/admin"))
    assert status == 400
    rec = await _last(run)
    assert (rec["reason"], rec["method"], rec["path"]) == (
        "encoded_dot",
        "GET",
        "/payments/%2e%2e/admin",
    )
