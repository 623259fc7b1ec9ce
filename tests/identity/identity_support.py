"""Helpers for the identity tests: real keys, a real JWKS server, a hand-moved clock.

Nothing is mocked: tokens are signed with real EC / RSA keys, JWKS documents are served
by an aiohttp server on 127.0.0.1 (port 0) and fetched over real sockets, and client
certificates are generated with `cryptography` so thumbprints are real RFC 8705 ones.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from multidict import CIMultiDict, CIMultiDictProxy

from ztproxy.config.identity import IdentityConfig, IssuerConfig
from ztproxy.model import Binding, PeerIdentity, Requirement, Route

USER_ISS = "https://idp.example"
DEVICE_ISS = "https://devices.example"
USER_AUD = "ztproxy"
DEVICE_AUD = "ztproxy-device"
T0 = 1_800_000_000.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    def jwk(self, **extra: Any) -> dict[str, Any]:
        pub = self.private.public_key()
        algo = RSAAlgorithm if self.alg.startswith(("RS", "PS")) else ECAlgorithm
        out: dict[str, Any] = algo.to_jwk(pub, as_dict=True)
        out.update(kid=self.kid, use="sig")
        out.update(extra)
        return out

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def ec_key(kid: str) -> SigningKey:
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def mint(
    key: SigningKey,
    claims: dict[str, Any] | None = None,
    *,
    iss: str = USER_ISS,
    aud: Any = USER_AUD,
    now: float = T0,
    headers: dict[str, Any] | None = None,
    alg: str | None = None,
    drop: tuple[str, ...] = (),
) -> str:
    payload: dict[str, Any] = {
        "iss": iss,
        "aud": aud,
        "sub": "alice",
        "iat": int(now),
        "exp": int(now) + 300,
    }
    payload.update(claims or {})
    for name in drop:
        payload.pop(name, None)
    hdr = {"kid": key.kid}
    hdr.update(headers or {})
    return jwt.encode(payload, key.private, algorithm=alg or key.alg, headers=hdr)


def mint_device(
    key: SigningKey, thumbprint: str | None, claims: dict[str, Any] | None = None, **kw: Any
) -> str:
    body: dict[str, Any] = {
        "device_id": "dev-42",
        "sub": "dev-42",
        "trust_level": "high",
        "managed": True,
        "os": "linux",
        "patch_level": "2026-10",
    }
    if thumbprint is not None:
        body["cnf"] = {"x5t#S256": thumbprint}
    body.update(claims or {})
    kw.setdefault("iss", DEVICE_ISS)
    kw.setdefault("aud", DEVICE_AUD)
    return mint(key, body, **kw)


def make_peer(name: str = "workload") -> PeerIdentity:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    spiffe = f"spiffe://corp.example/ns/prod/sa/{name}"
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe)]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
    return PeerIdentity(
        spiffe_id=spiffe,
        trust_domain="corp.example",
        x5t_s256=b64u(digest),
        fingerprint_sha256=digest.hex(),
        subject=f"CN={name}",
        issuer=f"CN={name}",
        not_before=now,
        not_after=now + dt.timedelta(days=365),
        uri_sans=(spiffe,),
    )


def route(
    user: Requirement = Requirement.REQUIRED,
    device: Requirement = Requirement.NONE,
    binding: Binding = Binding.REQUIRED,
) -> Route:
    return Route(
        name="payments-api",
        service="payments",
        upstream="http://127.0.0.1:9",
        user=user,
        device=device,
        device_binding=binding,
    )


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def bearer(token: str, name: str = "Authorization") -> CIMultiDictProxy[str]:
    return headers((name, f"Bearer {token}"))


@dataclass
class JwksServer:
    """A JWKS endpoint per issuer path, with rotation, outages and Cache-Control."""

    docs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    status: int = 200
    cache_control: str | None = None
    delay: float = 0.0
    requests: list[str] = field(default_factory=list)
    base: str = ""
    _runner: web.AppRunner | None = None

    def fetches(self, path: str | None = None) -> int:
        return sum(1 for p in self.requests if path is None or p == path)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200:
            return web.Response(status=self.status, text="down")
        keys = self.docs.get(request.path)
        if keys is None:
            return web.Response(status=404)
        hdrs = {"Cache-Control": self.cache_control} if self.cache_control else {}
        return web.Response(
            body=json.dumps({"keys": keys}).encode(), headers=hdrs, content_type="application/json"
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def issuers_for(base: str, **overrides: Any) -> IdentityConfig:
    user = IssuerConfig(
        name="corp-idp",
        kind="user",
        issuer=USER_ISS,
        audiences=(USER_AUD,),
        algorithms=("ES256", "RS256", "PS256"),
        jwks_uri=f"{base}/user/jwks",
    )
    device = IssuerConfig(
        name="device-trust",
        kind="device",
        issuer=DEVICE_ISS,
        audiences=(DEVICE_AUD,),
        algorithms=("ES256",),
        jwks_uri=f"{base}/device/jwks",
        required_claims=("exp", "iat", "device_id"),
        device_id_claim="device_id",
    )
    return IdentityConfig(issuers=(user, device), **overrides)


def sign_raw(
    header: bytes | dict[str, Any],
    payload: bytes | dict[str, Any],
    key: SigningKey | None,
    alg: str = "ES256",
) -> str:
    """A compact JWS from exact header and payload bytes (for crafted attacks)."""
    from jwt.algorithms import get_default_algorithms

    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64u(h)}.{b64u(p)}".encode()
    sig = b"" if key is None else get_default_algorithms()[alg].sign(signing_input, key.private)
    return f"{signing_input.decode()}.{b64u(sig)}"


def claims(now: float = T0, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "iss": USER_ISS,
        "aud": USER_AUD,
        "sub": "alice",
        "iat": int(now),
        "exp": int(now) + 300,
    }
    out.update(extra)
    return out


async def serve(app: web.Application, ssl_context: Any = None) -> tuple[web.AppRunner, int]:
    """Start `app` on 127.0.0.1, port 0; returns the runner (to clean up) and the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def static_app(path: str, body: bytes | str) -> web.Application:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=body.encode() if isinstance(body, str) else body)

    app = web.Application()
    app.router.add_get(path, handler)
    return app
