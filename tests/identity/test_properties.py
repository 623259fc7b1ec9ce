"""Properties over large input spaces (hypothesis), against the real authenticator and a
real JWKS server on 127.0.0.1. Each test owns one event loop for all its examples."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from identity_support import (
    T0,
    FakeClock,
    JwksServer,
    bearer,
    ec_key,
    issuers_for,
    make_peer,
    mint,
    mint_device,
    route,
)

from ztproxy.errors import ServiceUnavailable, Unauthenticated
from ztproxy.identity import TokenAuthenticator
from ztproxy.identity.carriers import check_query
from ztproxy.model import Requirement

REQ = Requirement.REQUIRED
B64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def test_any_single_byte_change_to_a_valid_token_is_rejected(
    loop: asyncio.AbstractEventLoop,
) -> None:
    user_key, device_key = ec_key("user-1"), ec_key("device-1")
    server = JwksServer(
        docs={
            "/user/jwks": [user_key.jwk(alg="ES256")],
            "/device/jwks": [device_key.jwk(alg="ES256")],
        }
    )
    loop.run_until_complete(server.start())
    clock = FakeClock()
    auth = TokenAuthenticator(issuers_for(server.base), clock=clock, refresh_poll_seconds=3600)
    loop.run_until_complete(auth.start())
    peer = make_peer()
    user_token = mint(user_key, {"email": "alice@example.com"})
    device_token = mint_device(device_key, peer.x5t_s256)
    # both valid (and now cached) before mutation
    for token, header, rt in (
        (user_token, "Authorization", route(REQ)),
        (device_token, "Device-Authorization", route(Requirement.NONE, REQ)),
    ):
        loop.run_until_complete(auth.authenticate(bearer(token, header), "", rt, peer))

    @settings(
        max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
    )
    @given(which=st.booleans(), data=st.data())
    def check(which: bool, data: st.DataObject) -> None:
        token, header, rt = (
            (user_token, "Authorization", route(REQ))
            if which
            else (device_token, "Device-Authorization", route(Requirement.NONE, REQ))
        )
        raw = bytearray(token.encode("ascii"))
        # anywhere, but often at a segment's last char, where base64url has spare bits
        ends = [i - 1 for i, ch in enumerate(token) if ch == "."] + [len(raw) - 1]
        pos = data.draw(
            st.one_of(st.integers(0, len(raw) - 1), st.sampled_from(ends)), label="position"
        )
        if data.draw(st.booleans(), label="delete"):
            del raw[pos]
        else:
            original = raw[pos]
            raw[pos] = data.draw(
                st.one_of(st.integers(0, 255), st.sampled_from(B64URL)).filter(
                    lambda b: b != original
                ),
                label="byte",
            )
        mutated = raw.decode("latin-1")
        with pytest.raises(Unauthenticated):
            loop.run_until_complete(auth.authenticate(bearer(mutated, header), "", rt, peer))

    try:
        check()
    finally:
        loop.run_until_complete(auth.close())
        loop.run_until_complete(server.stop())


def test_a_burst_of_unknown_kids_causes_at_most_the_allowed_fetches(
    loop: asyncio.AbstractEventLoop,
) -> None:
    user_key = ec_key("user-1")
    server = JwksServer(docs={"/user/jwks": [user_key.jwk(alg="ES256")], "/device/jwks": []})
    loop.run_until_complete(server.start())
    peer = make_peer()
    interval = 30

    @settings(
        max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
    )
    @given(
        steps=st.lists(st.floats(0, 20, allow_nan=False), min_size=1, max_size=120),
        concurrent=st.integers(1, 8),
        kids=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=5),
    )
    def check(steps: list[float], concurrent: int, kids: list[str]) -> None:
        clock = FakeClock()
        auth = TokenAuthenticator(issuers_for(server.base), clock=clock, refresh_poll_seconds=3600)

        async def burst() -> None:
            await auth.start()
            start_fetches = server.fetches("/user/jwks")
            for i, step in enumerate(steps):
                clock.advance(step)
                forged = [
                    ec_key(f"unknown-{kids[(i + j) % len(kids)]}-{i}") for j in range(concurrent)
                ]
                results = await asyncio.gather(
                    *(
                        auth.authenticate(bearer(mint(k, now=clock.now)), "", route(), peer)
                        for k in forged
                    ),
                    return_exceptions=True,
                )
                for res in results:
                    assert isinstance(res, Unauthenticated | ServiceUnavailable), res
                    assert res.reason in {"unknown_kid", "issuer_keys_unavailable"}
            elapsed = clock.now - T0
            # the start fetch happened at T0: one more per full interval since then
            fetched = server.fetches("/user/jwks") - start_fetches
            assert fetched <= int(elapsed // interval), (fetched, elapsed)
            await auth.close()

        loop.run_until_complete(burst())

    try:
        check()
    finally:
        loop.run_until_complete(server.stop())


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="ascii", exclude_characters="#"), max_size=200))
def test_ordinary_queries_are_not_mistaken_for_tokens(query: str) -> None:
    """No false positives on text without a base64url JSON header naming `alg`."""
    if (
        "access_token" in query.lower()
        or "id_token" in query.lower()
        or "device_token" in query.lower()
    ):
        return
    check_query(query)
