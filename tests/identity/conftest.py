"""Fixtures for the identity tests (helpers live in identity_support.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from identity_support import (
    FakeClock,
    JwksServer,
    SigningKey,
    ec_key,
    issuers_for,
    make_peer,
)

from ztproxy.config.identity import IdentityConfig
from ztproxy.identity import TokenAuthenticator
from ztproxy.metrics import Metrics
from ztproxy.model import PeerIdentity


@pytest.fixture(scope="session")
def rsa_private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def rsa_key(rsa_private: rsa.RSAPrivateKey) -> SigningKey:
    return SigningKey("rsa-1", "RS256", rsa_private)


@pytest.fixture
def user_key() -> SigningKey:
    return ec_key("user-1")


@pytest.fixture
def device_key() -> SigningKey:
    return ec_key("device-1")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def peer() -> PeerIdentity:
    return make_peer("checkout")


@pytest.fixture(scope="session")
def other_peer() -> PeerIdentity:
    return make_peer("intruder")


@pytest.fixture
async def jwks_server(
    user_key: SigningKey, rsa_key: SigningKey, device_key: SigningKey
) -> AsyncIterator[JwksServer]:
    server = JwksServer(
        docs={
            "/user/jwks": [user_key.jwk(alg="ES256"), rsa_key.jwk(alg="RS256")],
            "/device/jwks": [device_key.jwk(alg="ES256")],
        }
    )
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def make_auth(jwks_server: JwksServer, clock: FakeClock) -> AsyncIterator[Callable[..., Any]]:
    """Build and start authenticators against the test server; all closed at the end."""
    made: list[TokenAuthenticator] = []

    async def factory(
        config: IdentityConfig | None = None,
        *,
        start: bool = True,
        metrics: Metrics | None = None,
        poll: float = 3600.0,
    ) -> TokenAuthenticator:
        auth = TokenAuthenticator(
            config or issuers_for(jwks_server.base),
            metrics=metrics,
            clock=clock,
            refresh_poll_seconds=poll,
        )
        made.append(auth)
        if start:
            await auth.start()
        return auth

    yield factory
    for auth in made:
        await auth.close()


@pytest.fixture
async def auth(make_auth: Callable[..., Any]) -> TokenAuthenticator:
    result: TokenAuthenticator = await make_auth()
    return result
