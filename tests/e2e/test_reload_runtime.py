"""Reload publishes one immutable runtime or nothing (issue 12, finding 6): limits read
per runtime apply after a reload; a policy that does not compile, or a listener move,
changes nothing at all (routes included)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from e2e_harness import open_route

from ztproxy.config.load import load_config
from ztproxy.devtools.lab import proxy_config
from ztproxy.devtools.pki import DevPki
from ztproxy.server import Proxy


def _ctx(pki: DevPki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(*(str(p) for p in pki.workloads["checkout"]))
    return ctx


async def _get(
    port: int, ctx: ssl.SSLContext, path: str, headers: dict[str, str] | None = None
) -> int:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"https://localhost:{port}{path}", ssl=ctx, headers=headers) as r:
            await r.read()
            return r.status


async def _proxy(
    pki: DevPki, tmp_path: Path, upstream: str, policy_dir: Path
) -> tuple[Proxy, Path, dict[str, Any]]:
    raw = proxy_config(
        pki,
        upstreams={},
        audit_dir=tmp_path / "audit",
        policy_dirs=[policy_dir],
        routes=[open_route(upstream)],
        policy={"watch": False},
    )
    cfg = tmp_path / "z.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    proxy = Proxy(load_config(str(cfg)))
    await proxy.start()
    return proxy, cfg, raw


async def test_reload_applies_new_limits(
    pki: DevPki, tmp_path: Path, upstream: str, test_policy_dir: Path
) -> None:
    proxy, cfg, raw = await _proxy(pki, tmp_path, upstream, test_policy_dir)
    try:
        big = {"x-filler": "a" * 3000}
        assert await _get(proxy.port, _ctx(pki), "/payments/x", big) == 200
        raw["limits"] = {"max_header_bytes": 1024}
        cfg.write_text(yaml.safe_dump(raw))
        assert await proxy.reload() is True
        assert await _get(proxy.port, _ctx(pki), "/payments/x", big) == 431
        assert await _get(proxy.port, _ctx(pki), "/payments/x") == 200
    finally:
        await proxy.stop()


async def test_reload_with_a_broken_policy_changes_nothing(
    pki: DevPki, tmp_path: Path, upstream: str, test_policy_dir: Path
) -> None:
    proxy, cfg, raw = await _proxy(pki, tmp_path, upstream, test_policy_dir)
    try:
        assert proxy.runtime is not None
        before = proxy.runtime.current
        raw["routes"].append(
            open_route(upstream, name="reports-api", service="reports", path_prefix="/reports")
        )
        cfg.write_text(yaml.safe_dump(raw))
        (test_policy_dir / "broken.rego").write_text("package ztproxy.authz\n\nthis is not rego\n")
        assert await proxy.reload() is False
        assert proxy.runtime.current is before
        assert await _get(proxy.port, _ctx(pki), "/reports/x") == 404  # route not swapped
        assert await _get(proxy.port, _ctx(pki), "/payments/x") == 200
        (test_policy_dir / "broken.rego").unlink()
        assert await proxy.reload() is True
        assert await _get(proxy.port, _ctx(pki), "/reports/x") == 200
    finally:
        await proxy.stop()


async def test_reload_refuses_a_listener_move(
    pki: DevPki, tmp_path: Path, upstream: str, test_policy_dir: Path
) -> None:
    proxy, cfg, raw = await _proxy(pki, tmp_path, upstream, test_policy_dir)
    try:
        raw["listener"]["port"] = 1
        cfg.write_text(yaml.safe_dump(raw))
        assert await proxy.reload() is False
        assert await _get(proxy.port, _ctx(pki), "/payments/x") == 200
    finally:
        await proxy.stop()
