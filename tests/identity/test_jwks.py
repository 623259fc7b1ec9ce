"""JWKS over time against a real server: rotation, TTL, Cache-Control, outages within and
beyond the stale window, the refresh limiter, file and inline sources, https."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from identity_support import (
    FakeClock,
    JwksServer,
    SigningKey,
    bearer,
    ec_key,
    issuers_for,
    mint,
    route,
    serve,
    static_app,
)

from ztproxy.errors import ServiceUnavailable, Unauthenticated
from ztproxy.identity import TokenAuthenticator
from ztproxy.identity.jwks import parse_cache_control
from ztproxy.identity.keyset import build_keyset
from ztproxy.model import PeerIdentity

USER = "/user/jwks"


async def ok(auth: TokenAuthenticator, token: str, peer: PeerIdentity) -> None:
    creds = await auth.authenticate(bearer(token), "", route(), peer)
    assert creds.user is not None


async def reason(auth: TokenAuthenticator, token: str, peer: PeerIdentity) -> str:
    with pytest.raises((Unauthenticated, ServiceUnavailable)) as err:
        await auth.authenticate(bearer(token), "", route(), peer)
    return f"{err.value.status}:{err.value.reason}"


async def test_rotation_new_key_accepted_without_restart(
    auth, jwks_server: JwksServer, user_key: SigningKey, clock: FakeClock, peer: PeerIdentity
) -> None:
    new = ec_key("user-2")
    jwks_server.docs[USER] = [user_key.jwk(alg="ES256"), new.jwk(alg="ES256")]
    token = mint(new)
    # within the refresh interval of the start fetch, an unknown kid cannot refetch
    assert await reason(auth, token, peer) == "401:unknown_kid"
    clock.advance(31)
    await ok(auth, mint(new, now=clock.now), peer)
    assert jwks_server.fetches(USER) == 2


async def test_removed_key_stops_once_the_ttl_has_passed(
    auth, jwks_server: JwksServer, user_key: SigningKey, clock: FakeClock, peer: PeerIdentity
) -> None:
    token = mint(user_key, {"exp": int(clock.now) + 7200})
    await ok(auth, token, peer)  # now cached too
    new = ec_key("user-2")
    jwks_server.docs[USER] = [new.jwk(alg="ES256")]
    clock.advance(599)
    await ok(auth, token, peer)  # keys still fresh: the old key is trusted
    clock.advance(2)
    assert await reason(auth, token, peer) == "401:unknown_kid"  # cache entry dropped too
    await ok(auth, mint(new, now=clock.now), peer)


async def test_cache_control_max_age_shortens_the_ttl(
    make_auth, jwks_server: JwksServer, user_key: SigningKey, clock: FakeClock, peer: PeerIdentity
) -> None:
    jwks_server.cache_control = "public, max-age=60"
    auth = await make_auth()
    before = jwks_server.fetches(USER)
    clock.advance(59)
    await ok(auth, mint(user_key, now=clock.now), peer)
    assert jwks_server.fetches(USER) == before
    clock.advance(2)
    await ok(auth, mint(user_key, now=clock.now), peer)
    assert jwks_server.fetches(USER) == before + 1


@pytest.mark.parametrize(
    ("header", "ttl"), [("max-age=5", 30), ("no-store", 30), ("max-age=999999", 600), (None, 600)]
)
async def test_cache_control_is_bounded(
    make_auth,
    jwks_server: JwksServer,
    clock: FakeClock,
    user_key: SigningKey,
    peer: PeerIdentity,
    header: str | None,
    ttl: int,
) -> None:
    jwks_server.cache_control = header
    auth = await make_auth()
    before = jwks_server.fetches(USER)
    clock.advance(ttl - 1)
    await ok(auth, mint(user_key, now=clock.now), peer)
    assert jwks_server.fetches(USER) == before
    clock.advance(1)
    await ok(auth, mint(user_key, now=clock.now), peer)
    assert jwks_server.fetches(USER) == before + 1


def test_parse_cache_control() -> None:
    assert parse_cache_control("public, max-age=300") == 300
    assert parse_cache_control('max-age="42"') == 42
    assert parse_cache_control("no-cache, max-age=300") == 0
    assert parse_cache_control("max-age=-1") is None
    assert parse_cache_control("max-age=99999999999999999999") is None
    assert parse_cache_control(None) is None


async def test_endpoint_down_within_the_stale_window(
    auth, jwks_server: JwksServer, user_key: SigningKey, clock: FakeClock, peer: PeerIdentity
) -> None:
    jwks_server.status = 503
    clock.advance(601)  # past the TTL: refresh fails, the last good keys still serve
    await ok(auth, mint(user_key, now=clock.now), peer)
    assert auth.readiness()["jwks:corp-idp"] is True
    clock.advance(3600 - 2)
    await ok(auth, mint(user_key, now=clock.now), peer)
    jwks_server.status = 200
    clock.advance(31)  # the limiter lets a retry through; it succeeds
    await ok(auth, mint(user_key, now=clock.now), peer)
    assert auth.stats()["jwks_age_seconds:corp-idp"] == 0


async def test_endpoint_down_beyond_the_stale_window(
    auth, jwks_server: JwksServer, user_key: SigningKey, clock: FakeClock, peer: PeerIdentity
) -> None:
    jwks_server.status = 500
    clock.advance(600 + 3600)
    assert await reason(auth, mint(user_key, now=clock.now), peer) == "503:issuer_keys_unavailable"
    assert auth.readiness()["jwks:corp-idp"] is False
    jwks_server.status = 200
    clock.advance(30)
    await ok(auth, mint(user_key, now=clock.now), peer)
    assert auth.readiness()["jwks:corp-idp"] is True


async def test_never_loaded_is_503_and_not_ready_until_it_loads(
    make_auth, jwks_server: JwksServer, user_key: SigningKey, clock: FakeClock, peer: PeerIdentity
) -> None:
    jwks_server.status = 502
    auth = await make_auth(poll=0.01)  # start() must not fail hard
    assert auth.readiness() == {"jwks:corp-idp": False, "jwks:device-trust": False}
    assert await reason(auth, mint(user_key), peer) == "503:issuer_keys_unavailable"
    fetched = jwks_server.fetches()
    assert await reason(auth, mint(user_key), peer) == "503:issuer_keys_unavailable"
    assert jwks_server.fetches() == fetched  # a flood while down costs no fetches
    jwks_server.status = 200
    clock.advance(30)  # the background task retries once the interval has passed
    for _ in range(200):
        if all(auth.readiness().values()):
            break
        await asyncio.sleep(0.01)
    assert all(auth.readiness().values())
    await ok(auth, mint(user_key, now=clock.now), peer)


async def test_concurrent_refreshes_share_one_fetch(
    auth, jwks_server: JwksServer, user_key: SigningKey, clock: FakeClock, peer: PeerIdentity
) -> None:
    jwks_server.delay = 0.05
    clock.advance(601)
    before = jwks_server.fetches(USER)
    tokens = [mint(user_key, {"n": i}, now=clock.now) for i in range(20)]
    await asyncio.gather(*(ok(auth, t, peer) for t in tokens))
    assert jwks_server.fetches(USER) == before + 1


async def test_slow_endpoint_times_out_after_two_seconds(
    make_auth, jwks_server: JwksServer, peer: PeerIdentity
) -> None:
    jwks_server.delay = 3.0
    loop = asyncio.get_running_loop()
    started = loop.time()
    auth = await make_auth()
    elapsed = loop.time() - started
    assert 1.9 <= elapsed < 2.9
    assert not any(auth.readiness().values())


async def test_redirects_are_not_followed(
    make_auth, user_key: SigningKey, clock: FakeClock, peer: PeerIdentity
) -> None:
    target = JwksServer(docs={USER: [user_key.jwk(alg="ES256")]})
    await target.start()
    app = web.Application()

    async def redirect(_: web.Request) -> web.Response:
        raise web.HTTPFound(f"{target.base}{USER}")

    app.router.add_get(USER, redirect)
    runner, port = await serve(app)
    try:
        auth = await make_auth(issuers_for(f"http://127.0.0.1:{port}"))
        assert auth.readiness()["jwks:corp-idp"] is False
        assert target.fetches() == 0
    finally:
        await runner.cleanup()
        await target.stop()


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"keys": 1}',
        b"[1, 2",
        b'{"keys": [], "keys": [{"kty": "oct", "k": "AA"}]}',
        b'{"keys": [' + b"{}," * 200 + b"{}]}",
        b'{"keys": []' + b" " * 600_000 + b"}",
    ],
)
async def test_bad_documents_are_not_loaded(make_auth, clock: FakeClock, body: bytes) -> None:
    runner, port = await serve(static_app(USER, body))
    try:
        auth = await make_auth(issuers_for(f"http://127.0.0.1:{port}"))
        assert auth.readiness()["jwks:corp-idp"] is False
    finally:
        await runner.cleanup()


def test_keyset_skips_keys_that_cannot_be_trust_anchors(rsa_key: SigningKey) -> None:
    good = ec_key("good")
    private = good.jwk(alg="ES256", kid="private")
    private["d"] = "AAAA"
    small = SigningKey("small", "RS256", rsa.generate_private_key(65537, 1024))
    doc = {
        "keys": [
            good.jwk(alg="ES256"),
            private,
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"},
            small.jwk(alg="RS256"),
            good.jwk(alg="ES256", kid="enc", use="enc"),
            good.jwk(alg="ES256", kid="ops", key_ops=["sign"]),
            good.jwk(alg="ES384", kid="alg384"),  # P-256 key claiming ES384
            good.jwk(kid=""),
            {"kid": "junk"},
            "not a key",
            rsa_key.jwk(kid="rsa-any"),  # no alg: usable for every RSA alg configured
        ]
    }
    keys = build_keyset(doc, ("ES256", "ES384", "RS256", "PS256"))
    assert keys.kids == {"good", "rsa-any"}
    assert keys.find("good", "ES256") is not None
    assert keys.find("good", "ES384") is None
    assert keys.find("rsa-any", "RS256") is not None and keys.find("rsa-any", "PS256")
    with pytest.raises(ValueError):
        build_keyset({"no": "keys"}, ("ES256",))
    with pytest.raises(ValueError):
        build_keyset("keys", ("ES256",))


async def test_jwks_file_source_follows_the_file(
    tmp_path: Path, user_key: SigningKey, clock: FakeClock, peer: PeerIdentity
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [user_key.jwk(alg="ES256")]}))
    base = issuers_for("http://unused")
    user = dataclasses.replace(base.issuers[0], jwks_uri=None, jwks_file=str(path))
    auth = TokenAuthenticator(
        dataclasses.replace(base, issuers=(user,)), clock=clock, refresh_poll_seconds=3600
    )
    await auth.start()
    try:
        await ok(auth, mint(user_key), peer)
        new = ec_key("user-2")
        path.write_text(json.dumps({"keys": [new.jwk(alg="ES256")]}))
        clock.advance(601)
        await ok(auth, mint(new, now=clock.now), peer)
        path.unlink()
        clock.advance(601)
        await ok(auth, mint(new, now=clock.now), peer)  # stale but within the window
    finally:
        await auth.close()


async def test_inline_jwks(user_key: SigningKey, clock: FakeClock, peer: PeerIdentity) -> None:
    base = issuers_for("http://unused")
    user = dataclasses.replace(
        base.issuers[0], jwks_uri=None, jwks={"keys": [user_key.jwk(alg="ES256")]}
    )
    auth = TokenAuthenticator(dataclasses.replace(base, issuers=(user,)), clock=clock)
    await auth.start()
    try:
        assert auth.readiness() == {"jwks:corp-idp": True}
        await ok(auth, mint(user_key), peer)
    finally:
        await auth.close()


async def test_https_jwks_with_a_private_ca(
    tmp_path: Path, user_key: SigningKey, clock: FakeClock, peer: PeerIdentity
) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    doc = json.dumps({"keys": [user_key.jwk(alg="ES256")]})
    runner, port = await serve(static_app(USER, doc), server_ctx)
    base = issuers_for(f"https://127.0.0.1:{port}")
    try:
        for ca_path, ready in ((str(ca_file), True), (None, False)):
            user = dataclasses.replace(base.issuers[0], jwks_ca_file=ca_path)
            auth = TokenAuthenticator(dataclasses.replace(base, issuers=(user,)), clock=clock)
            await auth.start()
            try:
                assert auth.readiness() == {"jwks:corp-idp": ready}
                if ready:
                    await ok(auth, mint(user_key), peer)
            finally:
                await auth.close()
    finally:
        await runner.cleanup()


LOG_FIELDS = {
    "event",
    "log_level",
    "issuer",
    "reason",
    "have_keys",
    "keys",
    "skipped",
    "ttl_seconds",
    "age_seconds",
    "until_seconds",
}


async def test_outage_is_said_in_the_log_with_allow_listed_fields(
    auth, jwks_server: JwksServer, user_key: SigningKey, clock: FakeClock, peer: PeerIdentity
) -> None:
    from structlog.testing import capture_logs

    token_text: list[str] = []
    with capture_logs() as logs:
        jwks_server.status = 503
        clock.advance(601)
        token = mint(user_key, now=clock.now)
        token_text.append(token)
        await ok(auth, token, peer)
        clock.advance(3600)
        assert (
            await reason(auth, mint(user_key, now=clock.now), peer) == "503:issuer_keys_unavailable"
        )
        jwks_server.status = 200
        clock.advance(30)
        await ok(auth, mint(user_key, now=clock.now), peer)
    events = [entry["event"] for entry in logs]
    assert events == [
        "jwks_fetch_failed",
        "jwks_using_stale_keys",
        "jwks_fetch_failed",
        "jwks_stale_window_passed",
        "jwks_recovered",
    ]
    for entry in logs:
        assert set(entry) <= LOG_FIELDS, entry
        assert entry.get("issuer") == "corp-idp"
        assert not any(t in str(entry) for t in token_text)
