"""The proxy benchmark's stack: a dev PKI, the upstream, the bare proxy, ztproxy variants
(ES256 / RS256 user tokens x caches on / off, one or N workers) and nginx when on PATH,
each a process with its generated config; `preflight` checks ztproxy answers on the
chosen event loop before anything is measured.

Part of bench/bench_proxy.py (run that). Takes a scratch directory; returns running
processes (`Proc`). Trusts only the dev PKI it makes. `Stack.close()` stops everything.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from proxy_procs import (
    BENCH,
    LOAD_CPU,
    NO_UVLOOP,
    PROXY_CPU,
    PY,
    REPO,
    UPSTREAM_CODE,
    Proc,
    free_port,
    spawn,
    stop,
    wait_port,
    wait_ready,
)

TARGETS = {
    "zt": ("ES256", True),
    "zt-nocache": ("ES256", False),
    "zt-rs256": ("RS256", True),
    "zt-rs256-nocache": ("RS256", False),
}


# == configs ==============================================================================
def rsa_issuer(tmp: Path) -> dict[str, Any]:
    from ztproxy.devtools.mint import generate_signing_key, jwks, public_jwk
    from ztproxy.devtools.pki import key_pem, write_private

    key = generate_signing_key("RS256")
    write_private(tmp / "user-rsa.key", key_pem(key))
    (tmp / "user-rsa.jwks.json").write_text(
        json.dumps(jwks(public_jwk(key, "user-rsa-1", "RS256")))
    )
    return {"key": key, "kid": "user-rsa-1", "jwks": tmp / "user-rsa.jwks.json"}


def audit_key(pki: Any) -> Path:
    if pki.audit_dir is None:
        raise SystemExit("ztproxy.audit is not importable yet: the audit log is required")
    return Path(next(p for p in sorted(pki.audit_dir.iterdir()) if "priv" in p.name))


def zt_config(
    pki: Any,
    rsa: dict[str, Any],
    upstream: str,
    port: int,
    admin_port: int,
    audit_dir: Path,
    alg: str,
    caches: bool,
) -> dict[str, Any]:
    user = {
        "name": "dev-sso",
        "kind": "user",
        "issuer": pki.user_issuer,
        "audiences": [pki.audience],
        "algorithms": [alg],
        "jwks_file": str(rsa["jwks"] if alg == "RS256" else pki.user_jwks),
    }
    device = {
        "name": "dev-devices",
        "kind": "device",
        "issuer": pki.device_issuer,
        "audiences": [pki.audience],
        "jwks_file": str(pki.device_jwks),
        "algorithms": ["ES256"],
    }
    return {
        "listener": {
            "address": "127.0.0.1",
            "port": port,
            "cert_file": str(pki.server_cert),
            "key_file": str(pki.server_key),
        },
        "trust_domains": [{"name": pki.trust_domain, "bundle_file": str(pki.ca_cert)}],
        "routes": [
            {
                "name": "payments-api",
                "service": "payments",
                "path_prefix": "/api/v1",
                "upstream": upstream,
            },
            {
                "name": "reports-api",
                "service": "reports",
                "path_prefix": "/reports",
                "upstream": upstream,
            },
        ],
        "identity": {"issuers": [user, device], "token_cache_size": 10000 if caches else 0},
        "policy": {
            "engine": "embedded",
            "policy_dirs": [str(REPO / "policies")],
            "cache_ttl_ms": 1000 if caches else 0,
        },
        "audit": {"dir": str(audit_dir), "signing_key": str(audit_key(pki))},
        "admin": {"enabled": True, "port": admin_port},
        "logging": {"level": "warning"},
    }


def config_for_tree(cfg: dict[str, Any], tree: Path) -> dict[str, Any]:
    """This checkout's config rewritten for another checkout: its own shipped policies,
    and the config form it reads (a tree whose config reader knows no per-trust-domain
    bundles gets the old `listener.client_ca_file` + list of names)."""
    out = json.loads(json.dumps(cfg))
    out["policy"]["policy_dirs"] = [str(tree / "policies")]
    reader = (tree / "ztproxy" / "config" / "core.py").read_text()
    tds = out["trust_domains"]
    if "bundle_file" not in reader and tds and isinstance(tds[0], dict):
        out["listener"]["client_ca_file"] = tds[0]["bundle_file"]
        out["trust_domains"] = [td["name"] for td in tds]
    return out


NGINX_CONF = """
worker_processes {workers};
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {root}/body; proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fcgi; uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;
  upstream up {{ server 127.0.0.1:{up}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert}; ssl_certificate_key {key};
    ssl_client_certificate {ca}; ssl_verify_client on;
    keepalive_requests 100000;
    location / {{ proxy_pass http://up; proxy_http_version 1.1;
                 proxy_set_header Connection ""; }}
  }}
}}
"""


# == the stack ============================================================================
class Stack:
    """Every process of the benchmark; `close()` stops them all (each by its pid)."""

    def __init__(self, root: Path, *, with_rsa: bool) -> None:
        from ztproxy.devtools.pki import init_dev_pki

        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir()
        self.pki = init_dev_pki(root / "pki")
        self.rsa = rsa_issuer(root) if with_rsa else {"jwks": self.pki.user_jwks}
        self.procs: dict[str, Proc] = {}
        self.loop = "uvloop" if _has_uvloop() else "asyncio"
        self.loop_note = ""
        up_port = free_port()
        self.upstream = spawn(
            "upstream",
            [PY, "-c", UPSTREAM_CODE, str(up_port), "3600"],
            {LOAD_CPU},
            self.logs,
            up_port,
        )
        self.upstream_url = f"http://127.0.0.1:{up_port}"
        wait_ready(self.upstream, "upstream listening")

    def start_bare(
        self, name: str = "bare", workers: int = 1, cpus: set[int] | None = None
    ) -> Proc:
        port = free_port()
        p = self.pki
        proc = spawn(
            name,
            [
                PY,
                str(BENCH / "bare_proxy.py"),
                "--port",
                str(port),
                "--upstream",
                self.upstream_url,
                "--cert",
                str(p.server_cert),
                "--key",
                str(p.server_key),
                "--ca",
                str(p.ca_cert),
                "--workers",
                str(workers),
                "--loop",
                self.loop,
            ],
            cpus or {PROXY_CPU},
            self.logs,
            port,
            workers=workers,
        )
        self.procs[name] = proc
        return proc

    def start_zt(
        self,
        name: str,
        alg: str,
        caches: bool,
        workers: int = 1,
        cpus: set[int] | None = None,
        tree: Path | None = None,
    ) -> Proc:
        """ztproxy from this checkout, or (`tree`) from another one, e.g. the old head in
        a `git worktree`, run from that folder so `-m ztproxy` imports its package and
        `policies/` is its own shipped policy; its config is written in its own form."""
        port, admin = free_port(), free_port()
        audit_dir = self.root / f"audit-{name}"
        cfg = zt_config(self.pki, self.rsa, self.upstream_url, port, admin, audit_dir, alg, caches)
        if tree is not None:
            cfg = config_for_tree(cfg, tree)
        if workers > 1:
            cfg["admin"] = {"enabled": False}
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        argv = [PY, "-m", "ztproxy", "run", "--config", str(path), "--workers", str(workers)]
        if self.loop == "asyncio":  # `python -m ztproxy run ...` with uvloop unimportable
            argv = [PY, "-c", NO_UVLOOP, *argv[3:]]
        proc = spawn(
            name,
            argv,
            cpus or {PROXY_CPU},
            self.logs,
            port,
            admin_port=admin if workers == 1 else None,
            cwd=tree,
            workers=workers,
            alg=alg,
            caches=caches,
            audit_dir=audit_dir,
            tree=tree,
        )
        self.procs[name] = proc
        return proc

    def start_nginx(self, name: str = "nginx") -> Proc | None:
        binary = shutil.which("nginx")
        if binary is None:
            return None
        port, root = free_port(), self.root / "nginx"
        root.mkdir(exist_ok=True)
        p = self.pki
        conf = root / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                workers=1,
                root=root,
                up=self.upstream_url.rsplit(":", 1)[1],
                port=port,
                cert=p.server_cert,
                key=p.server_key,
                ca=p.ca_cert,
            )
        )
        proc = spawn(
            name,
            [binary, "-c", str(conf), "-p", str(root), "-g", "daemon off;"],
            {PROXY_CPU},
            self.logs,
            port,
        )
        self.procs[name] = proc
        return proc

    def wait_all(self) -> None:
        for proc in self.procs.values():
            if proc.name.startswith("bare"):
                wait_ready(proc, "bare proxy listening", proc.extra["workers"])
            elif proc.name.startswith("zt"):
                # the supervisor says it once, when every worker listens
                wait_ready(proc, "ztproxy listening", 1, timeout=60)
            else:
                wait_port(proc.port)

    def stop(self, name: str) -> int | None:
        return stop(self.procs.pop(name))

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        stop(self.upstream)


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def preflight(stack: Stack, plans: tuple[list[dict[str, Any]], dict[str, Any]]) -> str:
    """Start `zt` and send it requests on fresh connections. `ztproxy run` uses uvloop
    when installed; if the proxy cannot serve on it, say so loudly and run both proxies
    on asyncio (the figures then say what asyncio costs)."""
    stack.start_zt("zt", *TARGETS["zt"])
    stack.wait_all()
    problem = probe(stack.procs["zt"], *plans, stack.pki.ca_cert)
    if problem is None:
        return ""
    if stack.loop != "uvloop":
        raise RuntimeError(f"ztproxy does not answer on {stack.loop}: {problem}")
    log_tail = stack.procs["zt"].log.read_text(errors="replace").strip().splitlines()[-1:]
    stack.stop("zt")
    note = (
        f"(ztproxy FAILS on uvloop: {problem}; last log line: {log_tail}; "
        "both proxies measured on asyncio)"
    )
    print(f"WARNING: {note}", flush=True)
    stack.loop = "asyncio"
    stack.start_zt("zt", *TARGETS["zt"])
    stack.wait_all()
    problem = probe(stack.procs["zt"], *plans, stack.pki.ca_cert)
    if problem is not None:
        raise RuntimeError(f"ztproxy does not answer on asyncio either: {problem}")
    return note


def probe(
    proc: Proc, plans: list[dict[str, Any]], identities: dict[str, Any], ca: Path, tries: int = 8
) -> str | None:
    """`tries` fresh connections, one request each; None when every one was answered,
    else what went wrong and how often."""
    import ssl

    failures: Counter[str] = Counter()
    for i in range(tries):
        plan = plans[i % len(plans)]
        ctx = ssl.create_default_context(cafile=str(ca))
        ident = identities[plan["identity"]]
        ctx.load_cert_chain(ident["cert"], ident["key"])
        try:
            with (
                socket.create_connection(("127.0.0.1", proc.port), 2) as raw,
                ctx.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                tls.sendall(plan["requests"][0]["raw"].encode("latin-1"))
                head = tls.recv(64)
            if not head.startswith(b"HTTP/1.1 "):
                failures[f"unexpected answer {head[:20]!r}"] += 1
        except (OSError, ssl.SSLError) as exc:
            failures[type(exc).__name__] += 1
    if not failures:
        return None
    return f"{sum(failures.values())} of {tries} new connections failed: {dict(failures)}"
