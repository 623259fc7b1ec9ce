"""No blocking call on the event loop in the identity stage (blockbuster), scanning the
ztproxy.identity modules: start (https context, file JWKS), verification, refresh."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from blockbuster import blockbuster_ctx
from identity_support import FakeClock, JwksServer, SigningKey, bearer, mint, route

from ztproxy.identity import TokenAuthenticator
from ztproxy.model import PeerIdentity


async def test_no_blocking_calls(
    jwks_server: JwksServer,
    user_key: SigningKey,
    rsa_key: SigningKey,
    clock: FakeClock,
    peer: PeerIdentity,
    tmp_path: Path,
) -> None:
    from identity_support import issuers_for

    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [user_key.jwk(alg="ES256")]}))
    base = issuers_for(jwks_server.base)
    from_file = dataclasses.replace(
        base.issuers[0], name="file-idp", issuer="https://file", jwks_uri=None, jwks_file=str(path)
    )
    config = dataclasses.replace(base, issuers=(*base.issuers, from_file))

    def tokens() -> list[str]:
        now = clock.now
        return [
            mint(user_key, now=now),
            mint(rsa_key, now=now),
            mint(user_key, iss="https://file", now=now),
        ]

    with blockbuster_ctx(["ztproxy.identity"]):
        auth = TokenAuthenticator(config, clock=clock, refresh_poll_seconds=3600)
        await auth.start()
        try:
            for token in tokens() * 2:
                assert (await auth.authenticate(bearer(token), "", route(), peer)).user
            clock.advance(601)  # TTL refresh of the http and the file source
            for token in tokens():
                assert (await auth.authenticate(bearer(token), "", route(), peer)).user
        finally:
            await auth.close()
