"""A new key published under an old `kid` (issue 12, finding 6): a token signed by the
old key must not be served from the verified-token cache or the credentials memo once
the issuer's JWKS holds another key under that kid. Caches remember the verifying key's
identity (its RFC 7638 thumbprint), not the kid string."""

from __future__ import annotations

import pytest
from identity_support import T0, FakeClock, JwksServer, SigningKey, bearer, ec_key, mint, route

from ztproxy.errors import Unauthenticated
from ztproxy.identity.keyset import build_keyset, jwk_thumbprint
from ztproxy.model import PeerIdentity


@pytest.mark.parametrize("rounds", [1, 2])  # 2: the credentials memo has seen it twice
async def test_kid_reused_with_a_new_key(
    make_auth,
    jwks_server: JwksServer,
    user_key: SigningKey,
    clock: FakeClock,
    peer: PeerIdentity,
    rounds: int,
) -> None:
    auth = await make_auth()
    old_token = mint(user_key, {"exp": int(T0) + 7200})
    for _ in range(rounds):
        await auth.authenticate(bearer(old_token), "", route(), peer)
    # The issuer rotates: same kid, another key. Once the JWKS TTL has passed, any
    # request (here a token signed by the new key) brings the new set in.
    new_key = ec_key(user_key.kid)
    jwks_server.docs["/user/jwks"] = [new_key.jwk(alg="ES256")]
    clock.advance(601)
    new_token = mint(new_key, {"exp": int(T0) + 7200, "sub": "bob"}, now=T0 + 601)
    creds = await auth.authenticate(bearer(new_token), "", route(), peer)
    assert creds.user is not None and creds.user.subject == "bob"
    with pytest.raises(Unauthenticated) as err:
        await auth.authenticate(bearer(old_token), "", route(), peer)
    assert err.value.reason == "bad_signature"


def test_thumbprint_is_the_key_not_the_kid(user_key: SigningKey) -> None:
    other = ec_key(user_key.kid)
    a = build_keyset({"keys": [user_key.jwk(alg="ES256")]}, ("ES256",))
    b = build_keyset({"keys": [other.jwk(alg="ES256")]}, ("ES256",))
    assert a.kids == b.kids
    assert a.thumbprint(user_key.kid, "ES256") != b.thumbprint(user_key.kid, "ES256")
    # RFC 7638 section 3.1's example key and thumbprint
    rsa = {
        "kty": "RSA",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6t"
        "Soc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-"
        "65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08q"
        "NLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8aw"
        "apJzKnqDKgw",
    }
    assert jwk_thumbprint(rsa) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
