"""Issue 13, finding 10: a WebSocket session was authorized once. Now the policy can
tell an upgrade from a GET (`input.request.upgrade`), a session closes (1008) when its
token expires, and a policy reload followed by `LiveSessions.recheck` closes the
sessions the new policy denies."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from e2e_harness import StartProxy, open_route

from ztproxy.devtools.mint import load_private_key, mint_token
from ztproxy.model import Credentials, Principal
from ztproxy.stages.websocket import session_deadline

UPGRADE_ONLY = """
package ztproxy.authz

import rego.v1

default decision := {"allowed": false}

decision := {"allowed": true} if input.request.upgrade == "websocket"
"""

DENY_ALL = """
package ztproxy.authz

import rego.v1

default decision := {"allowed": false}
"""


def _policy(tmp_path: Path, text: str) -> Path:
    d = tmp_path / "ws-policy"
    d.mkdir(exist_ok=True)
    (d / "authz.rego").write_text(text)
    return d


async def test_policy_sees_the_upgrade(
    start_proxy: StartProxy, upstream: str, tmp_path: Path
) -> None:
    run = await start_proxy(
        routes=[open_route(upstream, path_prefix="/")],
        policy_dirs=[_policy(tmp_path, UPGRADE_ONLY)],
    )
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(run.url + "/ws", ssl=run.ctx()) as ws:
            await ws.send_str("hi")
            assert (await ws.receive_str()) == "payments:hi"
    status, _, _ = await run.request("GET", "/ws")
    assert status == 403  # the same path without the upgrade


async def test_session_closes_when_the_token_expires(
    start_proxy: StartProxy, upstream: str, tmp_path: Path
) -> None:
    run = await start_proxy(
        routes=[open_route(upstream, path_prefix="/", user="required")],
        policy_dirs=[_policy(tmp_path, UPGRADE_ONLY)],
    )
    token = mint_token(
        key=load_private_key(run.pki.user_key),
        kid=run.pki.user_kid,
        issuer=run.pki.user_issuer,
        audience=run.pki.audience,
        subject="alice",
        ttl=2,
    )
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(
            run.url + "/ws", ssl=run.ctx(), headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            await ws.send_str("hi")
            assert (await ws.receive_str()) == "payments:hi"
            msg = await ws.receive(timeout=10)  # nothing more is sent: only the close
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION


async def test_reload_recheck_closes_sessions_the_new_policy_denies(
    start_proxy: StartProxy, upstream: str, tmp_path: Path
) -> None:
    policy = _policy(tmp_path, UPGRADE_ONLY)
    run = await start_proxy(routes=[open_route(upstream, path_prefix="/")], policy_dirs=[policy])
    pipeline = run.proxy.pipeline
    assert pipeline is not None
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(run.url + "/ws", ssl=run.ctx()) as ws:
            await ws.send_str("hi")
            assert (await ws.receive_str()) == "payments:hi"
            assert len(pipeline.sessions) == 1
            assert await pipeline.sessions.recheck(run.proxy.decider.decide) == 0
            (policy / "authz.rego").write_text(DENY_ALL)
            assert await run.proxy.reload()  # a reload asks the new policy about the session
            msg = await ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION
    assert len(pipeline.sessions) == 0


def test_deadline_is_the_earliest_of_tokens_and_certificate() -> None:
    now = int(time.time())

    def principal(kind: str, exp: int) -> Principal:
        return Principal(
            kind=kind, issuer="i", subject="s", claims={}, token_sha256="x", expires_at=exp
        )

    cert_end = datetime.fromtimestamp(now + 100, UTC)
    creds = Credentials(user=principal("user", now + 300), device=principal("device", now + 50))
    assert session_deadline(creds, cert_end) == now + 50
    assert (
        session_deadline(Credentials(user=principal("user", now + 300)), cert_end)
        == cert_end.timestamp()
    )
    assert session_deadline(Credentials(), cert_end - timedelta(seconds=10)) == now + 90
