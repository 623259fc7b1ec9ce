"""Identity on the wire: user and device tokens verified on every request, identity
headers asserted to the upstream, tokens never forwarded, logged or audited."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from e2e_harness import StartProxy, open_route


def _names(body: bytes) -> dict[str, str]:
    return {k.lower(): v for k, v in json.loads(body)["headers"]}


def _tokened_route(upstream: str) -> dict:
    return open_route(upstream, user="required", device="required")


async def test_valid_tokens_pass_and_identity_is_asserted(
    start_proxy: StartProxy, upstream: str
) -> None:
    run = await start_proxy(routes=[_tokened_route(upstream)])
    user, device = run.user_token("alice"), run.device_token(sub="laptop-7")
    status, _, body = await run.request(
        "GET",
        "/payments/x",
        headers={
            "Authorization": f"Bearer {user}",
            "Device-Authorization": f"Bearer {device}",
            "X-User-Subject": "mallory",
            "x_device_id": "stolen",
            "Cookie": "app=1",
        },
    )
    assert status == 200, body
    got = _names(body)
    assert got["x-user-subject"] == "alice" and got["x-device-id"] == "laptop-7"
    assert got["x-user-issuer"] == run.pki.user_issuer
    assert "authorization" not in got and "device-authorization" not in got
    assert got["cookie"] == "app=1"  # the application's own session goes on
    assert "mallory" not in body.decode() and "stolen" not in body.decode()
    rec = (await run.records())[-1]
    assert (rec["user_subject"], rec["device_id"]) == ("alice", "laptop-7")


async def test_missing_token_is_401_without_error_code(
    start_proxy: StartProxy, upstream: str
) -> None:
    run = await start_proxy(routes=[_tokened_route(upstream)])
    status, headers, _ = await run.request("GET", "/payments/x")
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Bearer realm="ztproxy"'
    assert (await run.records())[-1]["reason"] == "missing_token"


async def test_expired_token_is_401_invalid_token(start_proxy: StartProxy, upstream: str) -> None:
    run = await start_proxy(routes=[_tokened_route(upstream)])
    old = int(time.time()) - 7200
    user = run.user_token("alice", iat=old, nbf=old, exp=old + 60)
    status, headers, body = await run.request(
        "GET",
        "/payments/x",
        headers={
            "Authorization": f"Bearer {user}",
            "Device-Authorization": f"Bearer {run.device_token()}",
        },
    )
    assert status == 401 and b"expired" not in body
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]
    assert (await run.records())[-1]["reason"] == "expired"


async def test_device_token_bound_to_another_certificate(
    start_proxy: StartProxy, upstream: str
) -> None:
    run = await start_proxy(routes=[_tokened_route(upstream)])
    device = run.device_token(workload="reports")  # bound to the reports certificate
    status, _, _ = await run.request(
        "GET",
        "/payments/x",
        headers={
            "Authorization": f"Bearer {run.user_token()}",
            "Device-Authorization": f"Bearer {device}",
        },
    )
    assert status == 401
    assert (await run.records())[-1]["reason"] in ("cert_binding_mismatch", "unbound_device_token")


async def test_token_in_query_string_refused(start_proxy: StartProxy, upstream: str) -> None:
    run = await start_proxy(routes=[_tokened_route(upstream)])
    token = run.user_token()
    status, _, _ = await run.request(
        "GET",
        f"/payments/x?access_token={token}",
        headers={"Device-Authorization": f"Bearer {run.device_token()}"},
    )
    assert status == 401
    assert (await run.records())[-1]["reason"] == "token_in_query"


async def test_user_token_as_device_token_refused(start_proxy: StartProxy, upstream: str) -> None:
    run = await start_proxy(routes=[_tokened_route(upstream)])
    user = run.user_token()
    status, _, _ = await run.request(
        "GET",
        "/payments/x",
        headers={"Authorization": f"Bearer {user}", "Device-Authorization": f"Bearer {user}"},
    )
    assert status == 401


async def test_issuer_keys_unavailable_is_503_and_not_ready(
    start_proxy: StartProxy, upstream: str
) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    run = await start_proxy(routes=[_tokened_route(upstream)])
    issuers = [
        dict(i)
        for i in [
            {
                "name": "dev-sso",
                "kind": "user",
                "issuer": run.pki.user_issuer,
                "audiences": [run.pki.audience],
                "jwks_uri": f"http://127.0.0.1:{port}/jwks",
                "algorithms": ["ES256"],
            },
            {
                "name": "dev-devices",
                "kind": "device",
                "issuer": run.pki.device_issuer,
                "audiences": [run.pki.audience],
                "jwks_file": str(run.pki.device_jwks),
                "algorithms": ["ES256"],
            },
        ]
    ]
    await run.proxy.stop()
    run = await start_proxy(
        routes=[_tokened_route(upstream)], extra={"identity": {"issuers": issuers}}
    )
    status, _, _ = await run.request(
        "GET",
        "/payments/x",
        headers={
            "Authorization": f"Bearer {run.user_token()}",
            "Device-Authorization": f"Bearer {run.device_token()}",
        },
    )
    assert status == 503
    assert (await run.records())[-1]["reason"] == "issuer_keys_unavailable"
    assert run.proxy.readiness()["ready"] is False


async def test_no_token_or_cookie_reaches_audit_or_logs(
    start_proxy: StartProxy, upstream: str, tmp_path: Path, capsys
) -> None:
    run = await start_proxy(routes=[_tokened_route(upstream)])
    user, device = run.user_token("alice"), run.device_token()
    secrets_sent = [user, device, "sess-SECRET-cookie"]
    for path in ("/payments/x", "/payments/a/../b", "/nowhere"):
        await run.request(
            "GET",
            path,
            headers={
                "Authorization": f"Bearer {user}",
                "Device-Authorization": f"Bearer {device}",
                "Cookie": "sid=sess-SECRET-cookie",
            },
        )
    await run.request("GET", "/payments/x", headers={"Authorization": f"Bearer {user}x"})
    await run.proxy.stop()
    raw = b"".join(p.read_bytes() for p in run.audit_dir.rglob("*") if p.is_file())
    out = capsys.readouterr()
    logs = (out.out + out.err).encode()
    for secret in secrets_sent:
        for part in (secret, secret.split(".")[-1]):  # the whole token and its signature
            assert part.encode() not in raw
            assert part.encode() not in logs
