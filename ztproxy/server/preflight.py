"""What `check-config` and `run` verify before anything listens, with the code the
server runs: the policy compiles (the same decider `Proxy` builds), the audit
directory can be written, and a remote OPA answers.

Failures raise `PreflightError` with one line naming the key and the path or URL; an
OPA that does not answer is a warning (the proxy starts and denies with 503 until it
answers), returned as text.
"""

from __future__ import annotations

import os
import ssl
import tempfile

import aiohttp

from ..config.load import Config
from ..ops.logs import quiet
from ..policy import build_decider


class PreflightError(Exception):
    """One line: what cannot be used, named by its key and path."""


async def check_policy(config: Config) -> None:
    """Load and compile the policy exactly as a worker will (raises the policy
    loader's own error, whose message names the file)."""
    if config.policy.engine != "embedded" or config.policy.bundle is not None:
        return  # OPA's own policy; or a bundle, fully checked when it arrives

    decider = build_decider(
        config.policy, decision_paths=[r.decision_path for r in config.routes if r.decision_path]
    )
    with quiet():  # the error is raised (one line); the loader's log line would repeat it
        try:
            await decider.start()
        finally:
            await decider.close()


def check_audit_dir(config: Config) -> None:
    """The audit directory exists and takes a new file, or can be created."""
    path = config.audit.dir
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise PreflightError(f"audit.dir {path}: exists and is not a directory")
        try:
            with tempfile.NamedTemporaryFile(dir=path, prefix=".ztproxy-check-"):
                pass
        except OSError as exc:
            raise PreflightError(
                f"audit.dir {path}: not writable ({(exc.strerror or str(exc)).lower()})"
            ) from None
        return
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise PreflightError(f"audit.dir {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PreflightError(f"audit.dir {path}: cannot be created ({parent} is not writable)")


async def probe_opa(config: Config, timeout: float = 2.0) -> str | None:
    """None when the remote OPA answers its /health endpoint; else a warning line."""
    url = config.policy.opa_url
    if config.policy.engine != "opa" or not url:
        return None
    context: ssl.SSLContext | bool = True
    if config.policy.opa_ca_file:
        context = ssl.create_default_context(cafile=config.policy.opa_ca_file)
        if config.policy.opa_cert_file and config.policy.opa_key_file:
            context.load_cert_chain(config.policy.opa_cert_file, config.policy.opa_key_file)
    health = url.rstrip("/")
    health = health[: -len("/v1")] if health.endswith("/v1") else health
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.get(f"{health}/health", ssl=context) as resp:
                await resp.read()
                if resp.status < 500:
                    return None
                problem = f"answered HTTP {resp.status}"
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        problem = f"does not answer ({type(exc).__name__})"
    return f"policy.opa_url {url}: {problem}; requests get 503 until it answers"


async def preflight(config: Config) -> list[str]:
    """Every check; raises on the first failure, returns the warnings."""
    check_audit_dir(config)
    await check_policy(config)
    warning = await probe_opa(config)
    return [warning] if warning else []
