"""Token verification cost per request: ztproxy's authenticator, cached and uncached,
ES256 and RS256, against PyJWT's bare `jwt.decode` measured in the same run. "cached,
per token" is the verified-token cache alone; "cached (whole request)" is what a repeated
request costs, answered by the authenticator's whole-request memo (docs/identity.md).

Run by hand: `python bench/bench_tokens.py [--iterations N] [--seconds S]`.
Each row stops after N calls or S seconds, whichever comes first, and prints the mean,
median and 99th percentile per call in microseconds. No network: keys are inline.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import hashlib
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from multidict import CIMultiDict, CIMultiDictProxy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ztproxy.config.identity import IdentityConfig, IssuerConfig  # noqa: E402
from ztproxy.identity import TokenAuthenticator  # noqa: E402
from ztproxy.model import PeerIdentity, Requirement, Route  # noqa: E402

ISS, AUD = "https://idp.example", "ztproxy"


def _peer() -> PeerIdentity:
    now = dt.datetime.now(dt.UTC)
    thumb = base64.urlsafe_b64encode(hashlib.sha256(b"bench").digest()).rstrip(b"=").decode()
    return PeerIdentity(
        spiffe_id="spiffe://bench/x",
        trust_domain="bench",
        x5t_s256=thumb,
        fingerprint_sha256="00" * 32,
        subject="CN=bench",
        issuer="CN=bench",
        not_before=now,
        not_after=now,
    )


async def _measure(
    fn: Callable[[], Awaitable[Any]], iterations: int, seconds: float
) -> list[float]:
    for _ in range(min(50, iterations)):  # warm up
        await fn()
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    for _ in range(iterations):
        start = time.perf_counter_ns()
        await fn()
        samples.append((time.perf_counter_ns() - start) / 1000)
        if time.perf_counter() > deadline:
            break
    return samples


async def main(iterations: int, seconds: float) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = {
        "keys": [
            {**ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True), "kid": "ec", "alg": "ES256"},
            {
                **RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True),
                "kid": "rsa",
                "alg": "RS256",
            },
        ]
    }
    issuer = IssuerConfig(
        name="bench",
        kind="user",
        issuer=ISS,
        audiences=(AUD,),
        algorithms=("ES256", "RS256"),
        jwks=jwks,
    )
    cached = TokenAuthenticator(IdentityConfig(issuers=(issuer,)))
    per_token = TokenAuthenticator(IdentityConfig(issuers=(issuer,)))
    per_token._pairs_max = 0  # the per-token cache alone, without the whole-request memo
    uncached = TokenAuthenticator(IdentityConfig(issuers=(issuer,), token_cache_size=0))
    await cached.start()
    await per_token.start()
    await uncached.start()
    route = Route(name="r", service="s", upstream="http://127.0.0.1:9", device=Requirement.NONE)
    peer = _peer()
    now = int(time.time())
    claims = {
        "iss": ISS,
        "aud": AUD,
        "sub": "alice",
        "iat": now,
        "exp": now + 3600,
        "email": "alice@example.com",
        "groups": ["eng", "payments"],
    }
    rows: list[tuple[str, list[float]]] = []
    try:
        for alg, key, kid in (("ES256", ec_key, "ec"), ("RS256", rsa_key, "rsa")):
            token = jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})
            public = key.public_key()
            headers = CIMultiDictProxy(CIMultiDict({"Authorization": f"Bearer {token}"}))

            async def bare(token: str = token, public: Any = public, alg: str = alg) -> Any:
                return jwt.decode(token, public, algorithms=[alg], audience=AUD, issuer=ISS)

            async def ours(
                auth: TokenAuthenticator, headers: CIMultiDictProxy[str] = headers
            ) -> Any:
                return await auth.authenticate(headers, "limit=10", route, peer)

            rows.append(
                (f"{alg} PyJWT jwt.decode (baseline)", await _measure(bare, iterations, seconds))
            )
            rows.append(
                (
                    f"{alg} ztproxy uncached",
                    await _measure(partial(ours, uncached), iterations, seconds),
                )
            )
            rows.append(
                (
                    f"{alg} ztproxy cached, per token",
                    await _measure(partial(ours, per_token), iterations * 10, seconds),
                )
            )
            rows.append(
                (
                    f"{alg} ztproxy cached (whole request)",
                    await _measure(partial(ours, cached), iterations * 10, seconds),
                )
            )
    finally:
        await per_token.close()
        await cached.close()
        await uncached.close()
    print(f"{'case':<34} {'calls':>7} {'mean us':>9} {'p50 us':>8} {'p99 us':>8}")
    for name, samples in rows:
        samples.sort()
        p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
        print(
            f"{name:<34} {len(samples):>7} {statistics.fmean(samples):>9.1f} "
            f"{statistics.median(samples):>8.1f} {p99:>8.1f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    asyncio.run(main(args.iterations, args.seconds))
