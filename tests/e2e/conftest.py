"""The wire-level harness fixtures: a dev PKI made at run time, real aiohttp upstreams,
the real proxy (TLS acceptor, pipeline, token verifier, embedded Rego, audit log) on
127.0.0.1 port 0. Helpers live in e2e_harness.py."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import TEST_POLICY, Running, StartProxy

from ztproxy.config.load import parse_config
from ztproxy.devtools.lab import proxy_config, start_app, upstream_app
from ztproxy.devtools.pki import DevPki, init_dev_pki
from ztproxy.server import Proxy


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return init_dev_pki(tmp_path_factory.mktemp("pki") / "dev")


@pytest.fixture
def test_policy_dir(tmp_path: Path) -> Path:
    d = tmp_path / "policy"
    d.mkdir()
    (d / "authz.rego").write_text(TEST_POLICY)
    return d


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    runner, port = await start_app(upstream_app("payments"))
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def start_proxy(
    pki: DevPki, tmp_path: Path, upstream: str, test_policy_dir: Path
) -> AsyncIterator[StartProxy]:
    started: list[Proxy] = []

    async def start(
        *,
        routes: list[dict[str, Any]] | None = None,
        upstreams: Mapping[str, str] | None = None,
        policy_dirs: list[Path] | None = None,
        extra: Mapping[str, Any] | None = None,
        policy: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Running:
        audit_dir = tmp_path / f"audit{len(started)}"
        raw = proxy_config(
            pki,
            upstreams=upstreams or {"payments": upstream},
            audit_dir=audit_dir,
            policy_dirs=policy_dirs or [test_policy_dir],
            routes=routes,
            policy=policy,
            extra=extra,
        )
        config = parse_config(raw, str(tmp_path))
        proxy = Proxy(config, **kwargs)
        started.append(proxy)
        await proxy.start()
        return Running(proxy, config, pki, audit_dir)

    yield start
    for proxy in started:
        if not proxy.stopping:
            await proxy.stop()


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], Any]]:
    """Every wire test runs on both event loops: `ztproxy run` uses uvloop when it is
    installed, and the two differ in how they hand over accepted connections."""
    import uvloop

    if item.path.name in ("test_process.py", "test_supervisor.py"):  # own processes there
        return {"asyncio": asyncio.new_event_loop}
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_audit_file(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """After every wire test has run: no audit file any of them produced holds a bearer
    token, a device token, a cookie value or a private key (checked on the raw bytes)."""
    yield
    base = tmp_path_factory.getbasetemp()
    # A JWT is three base64url parts joined by dots, the first starting with "eyJ";
    # base64 signatures in checkpoints may contain "eyJ" by chance, but never a dot.
    jwt = re.compile(rb"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.")
    for path in base.rglob("*.jsonl"):
        raw = path.read_bytes()
        assert not jwt.search(raw), f"a JWT in {path}"
        for needle in (b"Bearer ", b"PRIVATE KEY", b"SECRET-cookie"):
            assert needle not in raw, f"{needle!r} found in {path}"
