"""Helpers for the bundle tests: real keys, hand-made tarballs, a local bundle server.

Bundles are made here byte by byte (tarfile + gzip), in the layout `opa build` writes
(member names with a leading "/", `/.manifest`, `/data.json`, modules at their paths,
`/.signatures.json`), so the reader is tested against OPA's format and not only against
our own builder. The bundle server is a real aiohttp server on 127.0.0.1 that serves
whatever bytes the test puts in it, with an ETag, and answers 304 to If-None-Match.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ztproxy.policy.bundle.signing import VerificationKey, sign_files

POLICY = b"""package ztproxy.authz

import rego.v1

default decision := {"allowed": false, "reasons": ["default deny"]}

decision := {"allowed": true, "reasons": [data.ztproxy.config.reason]} if {
\tinput.version == 1
}
"""


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def files_for(
    revision: str, *, reason: str = "ok", roots: Sequence[str] = ("ztproxy",)
) -> list[tuple[str, bytes]]:
    """A sound bundle's files (names without the leading "/")."""
    manifest = {"revision": revision, "roots": list(roots), "rego_version": 1}
    return [
        (".manifest", json.dumps(manifest).encode()),
        ("data.json", json.dumps({"ztproxy": {"config": {"reason": reason}}}).encode()),
        ("ztproxy/authz/policy.rego", POLICY),
    ]


def signed(
    files: Sequence[tuple[str, bytes]], key: Any, alg: str = "RS256", kid: str | None = "global"
) -> list[tuple[str, bytes]]:
    return [*files, (".signatures.json", sign_files(files, key, alg, kid))]


@dataclass
class Member:
    name: str
    content: bytes = b""
    kind: bytes = tarfile.REGTYPE
    linkname: str = ""
    size: int | None = None  # claimed size (default: the content's)


def tarball(members: Iterable[tuple[str, bytes] | Member], *, slash: bool = True) -> bytes:
    """A gzipped tar of the members; (name, bytes) pairs get OPA's leading "/"."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            if not isinstance(m, Member):
                m = Member(("/" if slash else "") + m[0], m[1])
            info = tarfile.TarInfo(m.name)
            info.type = m.kind
            info.linkname = m.linkname
            info.size = len(m.content) if m.kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(m.content) if m.kind == tarfile.REGTYPE else None)
    return gzip.compress(buf.getvalue(), mtime=0)


def keys_for(key: Any, alg: str = "RS256", kid: str = "global") -> dict[str, VerificationKey]:
    return {kid: VerificationKey(kid, alg, key.public_key())}


def etag_of(raw: bytes) -> str:
    return '"' + hashlib.sha256(raw).hexdigest()[:16] + '"'


@dataclass
class BundleServer:
    """Serves `self.raw` at /bundle.tar.gz; counts requests, records If-None-Match."""

    raw: bytes = b""
    status: int = 200
    requests: int = 0
    if_none_match: list[str | None] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.if_none_match.append(request.headers.get("If-None-Match"))
        self.auth.append(request.headers.get("Authorization"))
        if self.status != 200:
            return web.Response(status=self.status)
        etag = etag_of(self.raw)
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=self.raw, headers={"ETag": etag})

    async def start(self, ssl_context: Any = None) -> str:
        app = web.Application()
        app.router.add_get("/bundle.tar.gz", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        scheme = "https" if ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}/bundle.tar.gz"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
