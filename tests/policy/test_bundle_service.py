"""The bundle service against a real aiohttp bundle server on 127.0.0.1.

First activation, ETag/304, a new revision, every bad input of issue 16 (each refused
with one log line and one metric, the old policy kept and still serving), no policy
before the first activation (not ready, fail closed), restart from the persisted bundle
with the server down, HTTPS with a private CA, and a bearer token from
headers_from_file that reaches the server but no log line.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import ssl
import tarfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
import trustme
from bundle_support import (
    BundleServer,
    Member,
    ec_key,
    files_for,
    rsa_key,
    signed,
    tarball,
)
from policy_support import make_input
from structlog.testing import capture_logs

from ztproxy.config.bundle import BundleConfig, BundleKey
from ztproxy.metrics import Metrics
from ztproxy.policy.bundle import refusal as R
from ztproxy.policy.bundle.engine import ACTIVATED, NOT_MODIFIED, REFUSED, BundleEngine
from ztproxy.policy.bundle.opahash import file_digest
from ztproxy.policy.engine import UNAVAILABLE, EngineError

RSA = rsa_key()
PATH = "ztproxy/authz/decision"


def config(url: str, tmp: Path, **kw: Any) -> BundleConfig:
    base = BundleConfig(
        url=url,
        keys=(BundleKey("global", "RS256", RSA.public_key()),),
        poll_min_seconds=3600,
        poll_max_seconds=3600,
        timeout_seconds=5,
        persist_dir=str(tmp / "persist"),
        size_limit_bytes=64 << 10,
        max_total_bytes=4 << 20,
    )
    return dataclasses.replace(base, **kw)


def good(revision: str, reason: str = "ok") -> bytes:
    return tarball(signed(files_for(revision, reason=reason), RSA))


def failures(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "ztproxy_policy_bundle_failures_total", {"reason": reason}
    )
    return value or 0.0


@pytest.fixture
async def server() -> AsyncIterator[BundleServer]:
    s = BundleServer()
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


def url_of(s: BundleServer) -> str:
    return f"http://127.0.0.1:{s.port}/bundle.tar.gz"


async def allowed_reason(engine: BundleEngine) -> Any:
    raw = await engine.evaluate(PATH, make_input())
    return raw.value["reasons"]


async def test_first_activation_etag_304_and_new_revision(
    server: BundleServer, tmp_path: Path
) -> None:
    metrics = Metrics()
    server.raw = good("r1")
    engine = BundleEngine(config(url_of(server), tmp_path), decision_paths=(PATH,), metrics=metrics)
    await engine.start()  # the first poll runs at once in the poll task
    try:
        for _ in range(200):
            if engine.loaded:
                break
            await _sleep()
        sha = hashlib.sha256(server.raw).hexdigest()
        assert engine.revision == f"r1@sha256:{sha}"
        assert await allowed_reason(engine) == ["ok"]
        info = {"policy_revision": engine.revision}
        assert metrics.registry.get_sample_value("ztproxy_policy_bundle_info", info) == 1
        assert await engine.poll_once() == NOT_MODIFIED
        assert server.if_none_match[-1] is not None
        first = engine.revision
        server.raw = good("r2", reason="second")
        assert await engine.poll_once() == ACTIVATED
        assert engine.revision.startswith("r2@sha256:")
        assert await allowed_reason(engine) == ["second"]
        assert (
            metrics.registry.get_sample_value(
                "ztproxy_policy_bundle_info", {"policy_revision": first}
            )
            is None
        )
    finally:
        await engine.close()


async def _sleep() -> None:
    import asyncio

    await asyncio.sleep(0.02)


def _resign(files: list[tuple[str, bytes]], **claims: Any) -> list[tuple[str, bytes]]:
    payload: dict[str, Any] = {
        "files": [{"name": n, "hash": file_digest(n, c), "algorithm": "SHA-256"} for n, c in files],
        **claims,
    }
    tok = jwt.api_jws.encode(
        json.dumps(payload).encode(), RSA, algorithm="RS256", headers={"kid": "global"}
    )
    return [*files, (".signatures.json", json.dumps({"signatures": [tok]}).encode())]


def _tampered() -> bytes:
    files = signed(files_for("bad"), RSA)
    return tarball(
        [
            (n, c.replace(b"version == 1", b"version == 2") if n.endswith(".rego") else c)
            for n, c in files
        ]
    )


def _with_member(member: Member) -> bytes:
    files = signed(files_for("bad"), RSA)
    return tarball([*files, member])


def _bomb() -> bytes:
    files = [*files_for("bad"), ("big/data.json", b"{}" + b" " * (32 << 20))]
    return tarball(files)


def _overlap() -> bytes:
    return tarball(signed(files_for("bad", roots=("ztproxy", "ztproxy/authz")), RSA))


def _data_outside() -> bytes:
    files = [*files_for("bad"), ("other/data.json", b'{"x": 1}')]
    return tarball(signed(files, RSA))


def _package_outside() -> bytes:
    files = [*files_for("bad"), ("other/p.rego", b"package other\n\nx := 1\n")]
    return tarball(signed(files, RSA))


def _unsound() -> bytes:
    rego = b'package ztproxy.extra\n\nimport rego.v1\n\nx := http.send({"method": "GET", "url": "http://x"})\n'
    return tarball(signed([*files_for("bad"), ("ztproxy/extra.rego", rego)], RSA))


def _missing() -> bytes:
    files = signed(files_for("bad"), RSA)
    return tarball([f for f in files if f[0] != "data.json"])


def _truncated() -> bytes:
    raw = good("bad")
    return raw[: len(raw) - 40]


BAD: list[tuple[str, Callable[[], bytes], str]] = [
    ("tampered file", _tampered, R.DIGEST),
    (
        "file not in the signature",
        lambda: _with_member(Member("/ztproxy/x.rego", b"package ztproxy.x\n")),
        R.FILE_UNSIGNED,
    ),
    ("signed file missing", _missing, R.FILE_MISSING),
    ("unknown key", lambda: tarball(signed(files_for("bad"), RSA, kid="other")), R.UNKNOWN_KEY),
    (
        "disallowed algorithm",
        lambda: tarball(signed(files_for("bad"), ec_key(), "ES256")),
        R.ALGORITHM,
    ),
    (
        "expired JWT",
        lambda: tarball(_resign(files_for("bad"), exp=int(time.time()) - 60)),
        R.EXPIRED,
    ),
    (
        "garbage JWT",
        lambda: tarball([*files_for("bad"), (".signatures.json", b'{"signatures":["x.y.z"]}')]),
        R.SIGNATURE,
    ),
    ("unsigned bundle", lambda: tarball(files_for("bad")), R.UNSIGNED),
    ("truncated tarball", _truncated, R.TRUNCATED),
    ("not gzip", lambda: b"<html>oops</html>", R.TRUNCATED),
    ("path traversal", lambda: _with_member(Member("../evil.rego", b"x")), R.MEMBER_NAME),
    ("absolute path", lambda: _with_member(Member("//etc/evil.rego", b"x")), R.MEMBER_NAME),
    (
        "symlink",
        lambda: _with_member(
            Member("/ztproxy/l.rego", kind=tarfile.SYMTYPE, linkname="/etc/passwd")
        ),
        R.MEMBER_TYPE,
    ),
    (
        "hard link",
        lambda: _with_member(Member("/ztproxy/h.rego", kind=tarfile.LNKTYPE, linkname="data.json")),
        R.MEMBER_TYPE,
    ),
    ("device", lambda: _with_member(Member("/ztproxy/d", kind=tarfile.CHRTYPE)), R.MEMBER_TYPE),
    (
        "member over the limit",
        lambda: _with_member(Member("/ztproxy/big.rego", b"#" * (100 << 10))),
        R.MEMBER_SIZE,
    ),
    ("zip bomb", _bomb, R.ARCHIVE_SIZE),
    ("overlapping roots", _overlap, R.ROOTS_OVERLAP),
    ("data outside the roots", _data_outside, R.OUTSIDE_ROOTS),
    ("package outside the roots", _package_outside, R.OUTSIDE_ROOTS),
    ("unsound policy", _unsound, R.POLICY),
]


async def test_every_bad_bundle_is_refused_and_the_old_policy_kept(
    server: BundleServer, tmp_path: Path
) -> None:
    metrics = Metrics()
    server.raw = good("r1")
    engine = BundleEngine(config(url_of(server), tmp_path), decision_paths=(PATH,), metrics=metrics)
    try:
        assert await engine.poll_once() == ACTIVATED
        kept = engine.revision
        for name, make, reason in BAD:
            server.raw = make()
            with capture_logs() as logs:
                assert await engine.poll_once() == REFUSED, name
            refusals = [e for e in logs if e["event"] == "policy_bundle_refused"]
            assert [e["reason"] for e in refusals] == [reason], name
            assert len(logs) == 1, (name, logs)
            assert failures(metrics, reason) >= 1, name
            assert engine.revision == kept and engine.loaded, name
            assert await allowed_reason(engine) == ["ok"], name
        server.status = 500
        assert await engine.poll_once() == REFUSED
        assert failures(metrics, R.DOWNLOAD) == 1
        assert engine.revision == kept
    finally:
        await engine.close()


async def test_no_bundle_ever_activated_means_not_loaded_and_fail_closed(
    server: BundleServer, tmp_path: Path
) -> None:
    server.raw = _tampered()
    engine = BundleEngine(config(url_of(server), tmp_path), decision_paths=(PATH,))
    try:
        assert await engine.poll_once() == REFUSED
        assert not engine.loaded and engine.revision == ""
        with pytest.raises(EngineError) as info:
            await engine.evaluate(PATH, make_input())
        assert info.value.reason == UNAVAILABLE
    finally:
        await engine.close()


async def test_restart_from_the_persisted_bundle_with_the_server_down(
    server: BundleServer, tmp_path: Path
) -> None:
    server.raw = good("r1")
    cfg = config(url_of(server), tmp_path)
    engine = BundleEngine(cfg, decision_paths=(PATH,))
    assert await engine.poll_once() == ACTIVATED
    revision = engine.revision
    await engine.close()
    await server.stop()
    assert (tmp_path / "persist" / "bundle.tar.gz").exists()
    metrics = Metrics()
    again = BundleEngine(cfg, decision_paths=(PATH,), metrics=metrics)
    try:
        with capture_logs() as logs:
            await again.start()
            assert again.loaded and again.revision == revision
            assert await allowed_reason(again) == ["ok"]
            assert await again.poll_once() == REFUSED  # the server is down
        assert again.revision == revision
        assert failures(metrics, R.DOWNLOAD) >= 1
        assert any(
            e["event"] == "policy_bundle_activated" and e["source"] == "persisted" for e in logs
        )
    finally:
        await again.close()


async def test_a_tampered_persisted_bundle_is_not_activated(
    server: BundleServer, tmp_path: Path
) -> None:
    persist = tmp_path / "persist"
    persist.mkdir()
    (persist / "bundle.tar.gz").write_bytes(_tampered())
    await server.stop()
    engine = BundleEngine(config(url_of(server), tmp_path), decision_paths=(PATH,))
    try:
        await engine.start()
        assert not engine.loaded
        assert engine.last_refusal in (R.DIGEST, R.DOWNLOAD)
    finally:
        await engine.close()


async def test_https_with_a_private_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    s = BundleServer(raw=good("tls"))
    url = await s.start(server_ctx)
    try:
        with_ca = BundleEngine(config(url, tmp_path, ca_file=str(ca_file)), decision_paths=(PATH,))
        without = BundleEngine(config(url, tmp_path, persist_dir=None), decision_paths=(PATH,))
        try:
            assert await with_ca.poll_once() == ACTIVATED
            assert await without.poll_once() == REFUSED
            assert without.last_refusal == R.DOWNLOAD
        finally:
            await with_ca.close()
            await without.close()
    finally:
        await s.stop()


async def test_bearer_token_from_headers_file_reaches_the_server_not_the_logs(
    server: BundleServer, tmp_path: Path
) -> None:
    secret = "s3cr3t-" + hashlib.sha256(b"token").hexdigest()
    headers = tmp_path / "headers"
    headers.write_text(f"Authorization: Bearer {secret}\n")
    server.raw = _tampered()
    engine = BundleEngine(
        config(url_of(server), tmp_path, headers_from_file=str(headers)), decision_paths=(PATH,)
    )
    try:
        with capture_logs() as logs:
            assert await engine.poll_once() == REFUSED
            server.status = 401
            assert await engine.poll_once() == REFUSED
        assert server.auth[0] == f"Bearer {secret}"
        assert secret not in repr(logs) and secret not in engine.last_error
    finally:
        await engine.close()


def test_gzip_helper_sanity() -> None:
    assert gzip.decompress(good("x"))[:1]  # the helper makes real gzip


async def test_poll_task_sleeps_a_jittered_interval_and_sends_the_etag(
    server: BundleServer, tmp_path: Path
) -> None:
    import asyncio

    server.raw = good("r1")
    drawn: list[tuple[float, float]] = []

    def jitter(low: float, high: float) -> float:
        drawn.append((low, high))
        return 0.01

    cfg = config(url_of(server), tmp_path, poll_min_seconds=0.05, poll_max_seconds=0.5)
    engine = BundleEngine(cfg, decision_paths=(PATH,), jitter=jitter)
    try:
        await engine.start()
        assert engine.loaded
        for _ in range(300):
            if server.requests >= 3:
                break
            await asyncio.sleep(0.01)
        assert server.requests >= 3
        assert drawn and all(d == (0.05, 0.5) for d in drawn)
        assert server.if_none_match[0] is None and server.if_none_match[-1] is not None
    finally:
        await engine.close()


async def test_sighup_reload_with_the_server_down_keeps_serving(
    server: BundleServer, tmp_path: Path
) -> None:
    server.raw = good("r1")
    engine = BundleEngine(
        config(url_of(server), tmp_path, persist_dir=None), decision_paths=(PATH,)
    )
    try:
        assert await engine.reload()  # activates
        await server.stop()
        assert await engine.reload()  # refused download, still serving r1: not a failed reload
        assert engine.revision.startswith("r1@")
    finally:
        await engine.close()
    never = BundleEngine(config(url_of(server), tmp_path, persist_dir=None), decision_paths=(PATH,))
    try:
        assert not await never.reload()
    finally:
        await never.close()
