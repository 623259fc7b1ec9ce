"""The proxy benchmark: ztproxy's full pipeline against a bare aiohttp mTLS proxy.

One command starts, each in its own process: a plain-HTTP aiohttp upstream; the bare
proxy (bench/bare_proxy.py, the Python ceiling); ztproxy (`python -m ztproxy run`) with
the full pipeline - mTLS, user token, device token bound to the client certificate, the
embedded Rego engine over the shipped policies/, the signed audit log - in four variants
(ES256 / RS256 user tokens x decision and token caches on / off); and nginx with
`ssl_verify_client on` when an `nginx` binary is on PATH. The proxy under test runs on
CPU 0; the load generator (bench/loadgen.py) and the upstream run on CPU 1.

Sections: keep-alive closed loop at fixed concurrency; a new TLS connection per request
(full handshake); an open-loop run at half the bare proxy's maximum rate (p99 added
latency); with `--workers 1,2` a scaling section. Repeats are interleaved (bare, zt-...,
bare, ...) and medians reported; each ratio is the median of per-repeat ratios against
the bare proxy measured in the same repeat. Then one profile of the full pipeline
(py-spy, when installed).

    python bench/bench_proxy.py            # about 3 minutes
    python bench/bench_proxy.py --quick    # under 40 s
    python bench/bench_proxy.py --workers 1,2

Writes bench/results/proxy-<time>.json and prints a table. Loopback only; bounded in
requests and time; every process it starts is stopped by its own process group id.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
PY = sys.executable
PROXY_CPU, LOAD_CPU = 0, 1
TARGETS = {"zt": ("ES256", True), "zt-nocache": ("ES256", False),
           "zt-rs256": ("RS256", True), "zt-rs256-nocache": ("RS256", False)}


# == processes ============================================================================
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int
    admin_port: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def pids(self) -> list[int]:
        """The process and its direct children (the workers of `--workers N`)."""
        out = [self.popen.pid]
        try:
            for task in os.listdir(f"/proc/{self.popen.pid}/task"):
                kids = Path(f"/proc/{self.popen.pid}/task/{task}/children").read_text()
                out += [int(k) for k in kids.split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
        return out


def spawn(name: str, argv: Sequence[str], cpus: set[int], logdir: Path, port: int,
          admin_port: int | None = None, **extra: Any) -> Proc:
    log = logdir / f"{name}.log"
    fh = open(log, "wb")  # noqa: SIM115 - owned by the child; closed with the process

    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    popen = subprocess.Popen(list(argv), stdout=fh, stderr=subprocess.STDOUT, env=env,
                             preexec_fn=pin, start_new_session=True, cwd=str(REPO))
    fh.close()
    return Proc(name, popen, log, port, admin_port, extra)


def wait_ready(proc: Proc, needle: str, count: int = 1, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.log.read_text(errors="replace").count(needle) >= count:
            return
        if proc.popen.poll() is not None:
            break
        time.sleep(0.05)
    tail = proc.log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"{proc.name} did not start (exit {proc.popen.poll()}):\n{tail}")


def stop(proc: Proc, timeout: float = 15.0) -> int | None:
    """SIGTERM to the process group we created, then SIGKILL after `timeout`."""
    if proc.popen.poll() is None:
        try:
            os.killpg(proc.popen.pid, signal.SIGTERM)
            proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait(5)
        except ProcessLookupError:
            pass
    return proc.popen.returncode


NO_UVLOOP = ("import runpy, sys; sys.modules['uvloop'] = None; sys.argv[0] = 'ztproxy'; "
             "runpy.run_module('ztproxy', run_name='__main__', alter_sys=True)")
UPSTREAM_CODE = """
import asyncio, json, os, sys
from aiohttp import web
async def handle(request):
    if request.can_read_body:
        await request.read()
    body = json.dumps({"service": "bench-upstream", "method": request.method,
                       "path": request.raw_path,
                       "spiffe": request.headers.get("x-client-spiffe-id")})
    return web.Response(text=body, content_type="application/json")
async def main(port):
    runner = web.ServerRunner(web.Server(handle), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    print("upstream listening", port, flush=True)
    await asyncio.sleep(float(sys.argv[2]))
try:
    import uvloop; uvloop.run(main(int(sys.argv[1])))
except ImportError:
    asyncio.run(main(int(sys.argv[1])))
"""


# == configs ==============================================================================
def rsa_issuer(tmp: Path) -> dict[str, Any]:
    from ztproxy.devtools.mint import generate_signing_key, jwks, public_jwk
    from ztproxy.devtools.pki import key_pem, write_private

    key = generate_signing_key("RS256")
    write_private(tmp / "user-rsa.key", key_pem(key))
    (tmp / "user-rsa.jwks.json").write_text(json.dumps(jwks(public_jwk(key, "user-rsa-1",
                                                                        "RS256"))))
    return {"key": key, "kid": "user-rsa-1", "jwks": tmp / "user-rsa.jwks.json"}


def audit_key(pki: Any) -> Path:
    if pki.audit_dir is None:
        raise SystemExit("ztproxy.audit is not importable yet: the audit log is required")
    return Path(next(p for p in sorted(pki.audit_dir.iterdir()) if "priv" in p.name))


def zt_config(pki: Any, rsa: dict[str, Any], upstream: str, port: int, admin_port: int,
              audit_dir: Path, alg: str, caches: bool) -> dict[str, Any]:
    user = {"name": "dev-sso", "kind": "user", "issuer": pki.user_issuer,
            "audiences": [pki.audience], "algorithms": [alg],
            "jwks_file": str(rsa["jwks"] if alg == "RS256" else pki.user_jwks)}
    device = {"name": "dev-devices", "kind": "device", "issuer": pki.device_issuer,
              "audiences": [pki.audience], "jwks_file": str(pki.device_jwks),
              "algorithms": ["ES256"]}
    return {
        "listener": {"address": "127.0.0.1", "port": port, "cert_file": str(pki.server_cert),
                     "key_file": str(pki.server_key), "client_ca_file": str(pki.ca_cert)},
        "trust_domains": [pki.trust_domain],
        "routes": [
            {"name": "payments-api", "service": "payments", "path_prefix": "/api/v1",
             "upstream": upstream},
            {"name": "reports-api", "service": "reports", "path_prefix": "/reports",
             "upstream": upstream},
        ],
        "identity": {"issuers": [user, device], "token_cache_size": 10000 if caches else 0},
        "policy": {"engine": "embedded", "policy_dirs": [str(REPO / "policies")],
                   "cache_ttl_ms": 1000 if caches else 0},
        "audit": {"dir": str(audit_dir), "signing_key": str(audit_key(pki))},
        "admin": {"enabled": True, "port": admin_port},
        "logging": {"level": "warning"},
    }


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
        self.upstream = spawn("upstream", [PY, "-c", UPSTREAM_CODE, str(up_port), "3600"],
                              {LOAD_CPU}, self.logs, up_port)
        self.upstream_url = f"http://127.0.0.1:{up_port}"
        wait_ready(self.upstream, "upstream listening")

    def start_bare(self, name: str = "bare", workers: int = 1,
                   cpus: set[int] | None = None) -> Proc:
        port = free_port()
        p = self.pki
        proc = spawn(name, [PY, str(BENCH / "bare_proxy.py"), "--port", str(port),
                            "--upstream", self.upstream_url, "--cert", str(p.server_cert),
                            "--key", str(p.server_key), "--ca", str(p.ca_cert),
                            "--workers", str(workers), "--loop", self.loop],
                     cpus or {PROXY_CPU}, self.logs, port, workers=workers)
        self.procs[name] = proc
        return proc

    def start_zt(self, name: str, alg: str, caches: bool, workers: int = 1,
                 cpus: set[int] | None = None) -> Proc:
        port, admin = free_port(), free_port()
        audit_dir = self.root / f"audit-{name}"
        cfg = zt_config(self.pki, self.rsa, self.upstream_url, port, admin, audit_dir, alg,
                        caches)
        if workers > 1:
            cfg["admin"] = {"enabled": False}
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        argv = [PY, "-m", "ztproxy", "run", "--config", str(path), "--workers", str(workers)]
        if self.loop == "asyncio":  # `python -m ztproxy run ...` with uvloop unimportable
            argv = [PY, "-c", NO_UVLOOP, *argv[3:]]
        proc = spawn(name, argv, cpus or {PROXY_CPU}, self.logs, port,
                     admin_port=admin if workers == 1 else None, workers=workers,
                     alg=alg, caches=caches, audit_dir=audit_dir)
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
        conf.write_text(NGINX_CONF.format(workers=1, root=root, up=self.upstream_url
                                          .rsplit(":", 1)[1], port=port, cert=p.server_cert,
                                          key=p.server_key, ca=p.ca_cert))
        proc = spawn(name, [binary, "-c", str(conf), "-p", str(root), "-g", "daemon off;"],
                     {PROXY_CPU}, self.logs, port)
        self.procs[name] = proc
        return proc

    def wait_all(self) -> None:
        for proc in self.procs.values():
            if proc.name.startswith("bare"):
                wait_ready(proc, "bare proxy listening", proc.extra["workers"])
            elif proc.name.startswith("zt"):
                wait_ready(proc, "ztproxy listening", proc.extra["workers"], timeout=60)
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
    note = (f"(ztproxy FAILS on uvloop: {problem}; last log line: {log_tail}; "
            "both proxies measured on asyncio)")
    print(f"WARNING: {note}", flush=True)
    stack.loop = "asyncio"
    stack.start_zt("zt", *TARGETS["zt"])
    stack.wait_all()
    problem = probe(stack.procs["zt"], *plans, stack.pki.ca_cert)
    if problem is not None:
        raise RuntimeError(f"ztproxy does not answer on asyncio either: {problem}")
    return note


def probe(proc: Proc, plans: list[dict[str, Any]], identities: dict[str, Any],
          ca: Path, tries: int = 8) -> str | None:
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
            with socket.create_connection(("127.0.0.1", proc.port), 2) as raw, \
                    ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(plan["requests"][0]["raw"].encode("latin-1"))
                head = tls.recv(64)
            if not head.startswith(b"HTTP/1.1 "):
                failures[f"unexpected answer {head[:20]!r}"] += 1
        except (OSError, ssl.SSLError) as exc:
            failures[type(exc).__name__] += 1
    if not failures:
        return None
    return f"{sum(failures.values())} of {tries} new connections failed: {dict(failures)}"


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


# == the request mix ======================================================================
USERS = {"alice": ["payments-operator"], "carol": ["payments-admin", "analyst"],
         "bob": ["analyst"], "mallory": []}
# (method, path template, user, device variant, status the shipped policy must give).
# Allowed templates count ALLOWED_WEIGHT times: about a quarter of all requests is denied.
MIX: dict[str, list[tuple[str, str, str, str, int]]] = {
    "checkout": [
        ("GET", "/api/v1/charges/ch_{i}", "alice", "ok", 200),
        ("GET", "/api/v1/charges?limit=10&page={i}", "carol", "ok", 200),
        ("POST", "/api/v1/charges", "alice", "ok", 200),
        ("GET", "/api/v1/refunds/rf_{i}", "carol", "ok", 200),
        ("POST", "/api/v1/refunds/rf_{i}", "alice", "ok", 200),
        ("GET", "/api/v1/charges/ch_{i}/lines", "alice", "ok", 200),
        ("DELETE", "/api/v1/charges/ch_{i}", "alice", "ok", 403),  # method_not_allowed
        ("GET", "/api/v1/admin/keys/{i}", "alice", "ok", 403),  # path_not_allowed
        ("GET", "/api/v1/charges/ch_{i}", "mallory", "ok", 403),  # user_role_missing
        ("GET", "/api/v1/charges/ch_{i}", "alice", "weak", 403),  # device trust too low
        ("GET", "/reports/daily/{i}", "bob", "ok", 403),  # source_not_allowed
    ],
    "reports": [
        ("GET", "/api/v1/charges/ch_{i}", "carol", "ok", 200),
        ("GET", "/api/v1/charges?from=2026-01-{i}", "alice", "ok", 200),
        ("POST", "/api/v1/charges", "alice", "ok", 403),
        ("GET", "/api/v1/refunds/rf_{i}", "alice", "ok", 403),
    ],
    "batch": [
        ("GET", "/reports/daily/{i}", "bob", "ok", 200),
        ("GET", "/reports/monthly/{i}/summary", "carol", "ok", 200),
        ("POST", "/reports/uploads/up_{i}", "bob", "ok", 200),
        ("GET", "/reports/daily/{i}", "alice", "ok", 403),
        ("GET", "/api/v1/charges/ch_{i}", "alice", "ok", 403),
    ],
    "payments": [
        ("POST", "/reports/payments/{i}", "bob", "ok", 200),
        ("GET", "/reports/payments/{i}", "bob", "ok", 403),
    ],
    "intruder": [
        ("GET", "/api/v1/charges/ch_{i}", "alice", "ok", 403),
    ],
}
ALLOWED_WEIGHT = 3
# Connection i presents the certificate of CONN_ORDER[i % len]: checkout-heavy.
CONN_ORDER = ["checkout", "batch", "reports", "checkout", "payments", "batch", "checkout",
              "reports", "checkout", "batch", "checkout", "intruder", "reports", "checkout",
              "payments", "batch"]


def build_plans(pki: Any, rsa: dict[str, Any], alg: str, distinct: int,
                seed: int = 11) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import random

    from ztproxy.devtools.mint import load_private_key, mint_token

    user_key = rsa["key"] if alg == "RS256" else load_private_key(pki.user_key)
    user_kid = rsa["kid"] if alg == "RS256" else pki.user_kid
    device_key = load_private_key(pki.device_key)
    users = {name: mint_token(key=user_key, kid=user_kid, issuer=pki.user_issuer,
                              audience=pki.audience, subject=name, alg=alg, ttl=7200,
                              claims={"roles": roles}) for name, roles in USERS.items()}
    rng = random.Random(seed)
    plans: dict[str, list[dict[str, Any]]] = {}
    identities: dict[str, Any] = {}
    for workload, templates in MIX.items():
        cert, key = pki.workloads[workload]
        identities[workload] = {"cert": str(cert), "key": str(key)}
        devices = {variant: mint_token(
            key=device_key, kid=pki.device_kid, issuer=pki.device_issuer,
            audience=pki.audience, subject=f"{workload}-laptop-{variant}", ttl=7200,
            claims={"trust_level": 3 if variant == "ok" else 1, "managed": True},
            bind_cert=cert.read_bytes()) for variant in ("ok", "weak")}
        reqs = []
        for method, path, user, device, expect in templates:
            for i in range(distinct * (ALLOWED_WEIGHT if expect == 200 else 1)):
                body = json.dumps({"amount": 1000 + i, "currency": "EUR", "ref": f"r{i}"}) \
                    if method == "POST" else ""
                target = path.format(i=i % distinct)
                head = (f"{method} {target} HTTP/1.1\r\nHost: localhost\r\n"
                        f"User-Agent: ztbench/1\r\nAccept: application/json\r\n"
                        f"Authorization: Bearer {users[user]}\r\n"
                        f"Device-Authorization: Bearer {devices[device]}\r\n")
                if body:
                    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                reqs.append({"raw": head + "\r\n" + body, "expect": expect})
        rng.shuffle(reqs)
        plans[workload] = reqs
    return [{"identity": w, "requests": plans[w]} for w in CONN_ORDER], identities


# == one measurement ======================================================================
@dataclass
class Bench:
    stack: Stack
    args: argparse.Namespace
    plans: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]]
    runs: list[dict[str, Any]] = field(default_factory=list)

    def measure(self, section: str, target: str, rep: int, *, mode: str = "keepalive",
                rate: float = 0.0, concurrency: int | None = None,
                duration: float | None = None, record: bool = True,
                proc_name: str | None = None) -> dict[str, Any]:
        a = self.args
        proc = self.stack.procs.get(proc_name or target)
        if target == "direct":  # the upstream itself, plain HTTP: the floor
            port, tls, pids = self.stack.upstream.port, False, []
        else:
            assert proc is not None
            port, tls, pids = proc.port, True, proc.pids()
        alg = proc.extra.get("alg", "ES256") if proc else "ES256"
        plans, identities = self.plans[alg]
        if not target.startswith("zt"):  # everything passes: the upstream says 200
            plans = [{"identity": p["identity"], "requests": [
                {"raw": r["raw"], "expect": 200} for r in p["requests"]]} for p in plans]
        spec = {
            "target": {"host": "127.0.0.1", "port": port, "tls": tls, "ca": str(
                self.stack.pki.ca_cert), "identities": identities},
            "plans": plans, "mode": mode, "rate": rate, "cpu": [LOAD_CPU], "cpu_pids": pids,
            "concurrency": concurrency or a.concurrency, "max_requests": a.max_requests,
            "duration": duration or a.duration, "warmup": a.warmup, "seed": rep,
        }
        spec_path = self.stack.root / "spec.json"
        out_path = self.stack.root / "out.json"
        spec_path.write_text(json.dumps(spec))
        out_path.unlink(missing_ok=True)
        up0 = cpu_ns([self.stack.upstream.popen.pid])
        subprocess.run([PY, str(BENCH / "loadgen.py"), str(spec_path), str(out_path)],
                       check=True, timeout=spec["warmup"] + spec["duration"] + 60)
        result: dict[str, Any] = json.loads(out_path.read_text())
        n = result["requests"] or 1
        result["upstream_cpu_us_per_req"] = round((cpu_ns([self.stack.upstream.popen.pid])
                                                   - up0) / 1000 / n, 1)
        result.update(section=section, target=target, rep=rep,
                      concurrency=spec["concurrency"], workers=proc.extra.get("workers", 1)
                      if proc else 1)
        if record:
            self.runs.append(result)
        print(f"  {section:<10} {target:<18} rep {rep}  {result['rps']:>8.0f} req/s  "
              f"p50 {result['p50_us']:>7.0f} us  p99 {result['p99_us']:>7.0f} us  "
              f"cpu {result['cpu_us_per_req'] or 0:>6.0f} us/req  "
              f"{_statuses(result)}", flush=True)
        return result


def cpu_ns(pids: list[int]) -> int:
    sys.path.insert(0, str(BENCH))
    from loadgen import cpu_snapshot

    return cpu_snapshot(pids)[1]


def _statuses(r: dict[str, Any]) -> str:
    parts = [f"{k}:{v}" for k, v in r["statuses"].items()]
    if r["errors"]:
        parts.append(f"errors:{sum(r['errors'].values())}")
    if r["mismatches"]:
        parts.append(f"MISMATCH:{r['mismatches']}")
    return " ".join(parts)


# == sections =============================================================================
def abba(rep: int, items: list[str]) -> list[str]:
    """Run order for one repeat: forwards on even repeats, backwards on odd ones, so a
    slow drift of the shared machine does not favour whoever runs first."""
    return items if rep % 2 == 0 else items[::-1]


def run_sections(b: Bench, zt_targets: list[str], extra_ceilings: list[str]) -> float:
    a = b.args
    everyone = ["bare", *zt_targets, *extra_ceilings]
    print("warm-up (not recorded)", flush=True)
    for t in everyone:
        b.measure("warmup", t, 0, duration=0.6 if a.quick else 1.0, record=False)
    print("keep-alive, closed loop", flush=True)
    for rep in range(a.repeats):
        for t in abba(rep, everyone):
            b.measure("keepalive", t, rep)
    bare_max = statistics.median(r["rps"] for r in b.runs
                                 if r["section"] == "keepalive" and r["target"] == "bare")
    print("new TLS connection per request (full handshake)", flush=True)
    for rep in range(a.repeats):
        for t in abba(rep, ["bare", "zt", *extra_ceilings]):
            b.measure("handshake", t, rep, mode="handshake", concurrency=a.handshake_conc,
                      duration=a.duration * 0.75)
    rate = round(bare_max / 2)
    print(f"fixed rate {rate} req/s (half the bare proxy's maximum)", flush=True)
    for rep in range(a.repeats):
        for t in abba(rep, ["direct", "bare", "zt", *extra_ceilings]):
            b.measure("rate", t, rep, mode="rate", rate=rate, concurrency=a.rate_conc)
    return float(rate)


def run_workers(b: Bench, counts: list[int]) -> None:
    """Scaling: N=1 on CPU 0; N>1 on every CPU, sharing them with the load generator and
    the upstream (two cores: what this machine can honestly show)."""
    print(f"workers {counts} (N>1: proxy on all CPUs, load generator shares CPU 1)",
          flush=True)
    names: list[tuple[str, str]] = []
    for n in counts:
        if n == 1:
            names += [("bare", "bare"), ("zt", "zt")]
            continue
        cpus = set(range(os.cpu_count() or 1))
        b.stack.start_bare(f"bare-w{n}", workers=n, cpus=cpus)
        b.stack.start_zt(f"zt-w{n}", "ES256", True, workers=n, cpus=cpus)
        names += [(f"bare-w{n}", f"bare-w{n}"), (f"zt-w{n}", f"zt-w{n}")]
    b.stack.wait_all()
    for _, proc_name in names:
        b.measure("warmup", proc_name, 0, duration=1.0, record=False)
    for rep in range(b.args.repeats):
        for label, proc_name in (names if rep % 2 == 0 else names[::-1]):
            b.measure("workers", label, rep, proc_name=proc_name)


# == profile ==============================================================================
def profile(b: Bench, target: str, seconds: float) -> dict[str, Any] | None:
    spy = shutil.which("py-spy") or str(Path(PY).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy not installed: no profile (pip install py-spy)", flush=True)
        return None
    proc = b.stack.procs[target]
    out = b.stack.root / f"profile-{target}.txt"
    print(f"profiling {target} with py-spy for {seconds:.0f} s", flush=True)
    spy_proc = subprocess.Popen(
        [spy, "record", "--pid", str(proc.popen.pid), "--duration", str(int(seconds)),
         "--rate", "200", "--format", "raw", "--threads", "--nonblocking", "--output",
         str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        preexec_fn=lambda: os.sched_setaffinity(0, {LOAD_CPU}))
    time.sleep(0.5)
    b.measure("profile", target, 0, duration=seconds - 1.0, record=False)
    try:
        _, err = spy_proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        spy_proc.kill()
        spy_proc.communicate()
        return None
    if not out.exists():
        print(f"py-spy failed: {err.decode(errors='replace')[-300:]}", flush=True)
        return None
    RESULTS.mkdir(exist_ok=True)
    shutil.copy(out, RESULTS / out.name)
    return hot_spots(out.read_text())


def _frame(frame: str) -> str:
    """'handle (ztproxy/pipeline.py:120)' -> 'ztproxy/pipeline.py:handle'."""
    name, _, where = frame.rpartition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3.11/", str(REPO) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{name}"


def hot_spots(raw: str, top: int = 20) -> dict[str, Any]:
    """Self and inclusive time per function from py-spy's collapsed stacks (with
    --threads the first frame names the thread). Each self-time entry also names the
    innermost ztproxy function on its stacks: the place to fix."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    callers: dict[str, Counter[str]] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        parts = stack.split(";")
        thread = parts[0] if parts and parts[0].startswith(("thread", "process")) else "?"
        threads[thread.split(": ", 1)[-1]] += n
        frames = [_frame(f) for f in parts if f.rstrip().endswith(")") and " (" in f
                  and not f.startswith(("thread", "process"))]
        if not frames:
            continue
        leaf = frames[-1]
        own[leaf] += n
        zt = next((f for f in reversed(frames) if f.startswith("ztproxy/")), "-")
        callers.setdefault(leaf, Counter())[zt] += n
        for f in set(frames):
            incl[f] += n

    def pct(c: int) -> float:
        return round(100.0 * c / total, 1) if total else 0.0

    return {
        "samples": total,
        "threads": [(t, pct(c)) for t, c in threads.most_common()],
        "self": [(f, pct(c), callers[f].most_common(1)[0][0]) for f, c in own.most_common(top)],
        "inclusive_ztproxy": [(f, pct(c)) for f, c in incl.most_common()
                              if f.startswith("ztproxy/")][:top],
        "inclusive_all": [(f, pct(c)) for f, c in incl.most_common(top)],
    }


# == results ==============================================================================
METRICS = ("ztproxy_decision_cache_total", "ztproxy_token_cache_total",
           "ztproxy_audit_records_total", "ztproxy_policy_decisions_total")


def scrape(proc: Proc) -> dict[str, float]:
    if proc.admin_port is None:
        return {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.admin_port}/metrics",
                                    timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(METRICS):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def audit_check(proc: Proc, pki: Any) -> dict[str, Any]:
    """Records on disk after a clean stop, and `ztproxy audit verify` when it exists."""
    audit_dir: Path = proc.extra["audit_dir"]
    records = sum(sum(1 for line in f.open("rb") if line.strip())
                  for f in audit_dir.rglob("*.jsonl"))
    out: dict[str, Any] = {"records": records}
    pub = next((p for p in sorted(pki.audit_dir.iterdir()) if "pub" in p.name), None)
    if pub is not None:
        cp = subprocess.run([PY, "-m", "ztproxy", "audit", "verify", str(audit_dir),
                             "--key", str(pub)], capture_output=True, text=True, timeout=120,
                            cwd=str(REPO))
        out["verify_exit"] = cp.returncode
        out["verify_tail"] = (cp.stdout + cp.stderr).strip().splitlines()[-3:]
    return out


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None and r[key] == r[key]]
    return round(statistics.median(vals), 1) if vals else None


def med(values: Any, digits: int = 3) -> float | None:
    vals = [v for v in values if v == v]  # drop NaN (a run without answers)
    return round(statistics.median(vals), digits) if vals else None


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    keys = list(dict.fromkeys((r["section"], r["target"]) for r in runs))
    for section, target in keys:
        mine = [r for r in runs if (r["section"], r["target"]) == (section, target)]
        row: dict[str, Any] = {"section": section, "target": target, "repeats": len(mine)}
        for k in ("rps", "p50_us", "p99_us", "cpu_us_per_req", "cpu_sched_us_per_req",
                  "cpu_util", "loadgen_cpu_us_per_req", "upstream_cpu_us_per_req"):
            row[k] = median_of(mine, k)
        statuses: Counter[str] = Counter()
        for r in mine:
            statuses.update(r["statuses"])
        row["statuses"] = dict(statuses)
        row["errors"] = sum(sum(r["errors"].values()) for r in mine)
        row["mismatches"] = sum(r["mismatches"] for r in mine)
        base = "bare" if section != "workers" else (
            "bare" + target[2:] if target.startswith("zt") else target)
        pairs = [(r, x) for r in mine for x in runs
                 if x["section"] == section and x["rep"] == r["rep"] and x["target"] == base
                 and x is not r]
        if pairs:
            row["x_rps"] = med(r["rps"] / x["rps"] for r, x in pairs if x["rps"])
            row["x_cpu"] = med(r["cpu_us_per_req"] / x["cpu_us_per_req"] for r, x in pairs
                               if r["cpu_us_per_req"] and x["cpu_us_per_req"])
            row["x_cpu_sched"] = med(r["cpu_sched_us_per_req"] / x["cpu_sched_us_per_req"]
                                     for r, x in pairs
                                     if r["cpu_sched_us_per_req"] and x["cpu_sched_us_per_req"])
            row["added_p50_us"] = med((r["p50_us"] - x["p50_us"] for r, x in pairs
                                       if r["requests"] and x["requests"]), 1)
            row["added_p99_us"] = med((r["p99_us"] - x["p99_us"] for r, x in pairs
                                       if r["requests"] and x["requests"]), 1)
        rows.append(row)
    return rows


def targets_check(rows: list[dict[str, Any]]) -> list[tuple[str, str, bool | None]]:
    get = {(r["section"], r["target"]): r for r in rows}
    ka, rate = get.get(("keepalive", "zt"), {}), get.get(("rate", "zt"), {})
    checks: list[tuple[str, str, bool | None]] = []
    limits: tuple[tuple[str, Any, Callable[[float], bool]], ...] = (
        ("throughput >= 0.8x bare", ka.get("x_rps"), lambda v: v >= 0.8),
        ("CPU/request <= 1.25x bare", ka.get("x_cpu"), lambda v: v <= 1.25),
        ("p99 added <= 1000 us at half bare max (vs bare)", rate.get("added_p99_us"),
         lambda v: v <= 1000),
    )
    for label, value, ok in limits:
        checks.append((label, str(value), None if value is None else bool(ok(value))))
    return checks


def fmt(value: Any, spec: str) -> str:
    return format(value, spec) if value is not None else "-"


def print_table(rows: list[dict[str, Any]], checks: list[tuple[str, str, bool | None]]) -> None:
    head = (f"{'section':<10} {'target':<17} {'req/s':>8} {'p50 us':>8} {'p99 us':>8} "
            f"{'cpu us/req':>10} {'x req/s':>8} {'x cpu':>6} {'+p99 us':>8}  statuses")
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        st = " ".join(f"{k}:{v}" for k, v in sorted(r["statuses"].items()))
        if r["errors"]:
            st += f" errors:{r['errors']}"
        if r["mismatches"]:
            st += f" MISMATCH:{r['mismatches']}"
        print(f"{r['section']:<10} {r['target']:<17} {fmt(r['rps'], '8.0f')} "
              f"{fmt(r['p50_us'], '8.0f')} {fmt(r['p99_us'], '8.0f')} "
              f"{fmt(r['cpu_us_per_req'], '10.0f')} {fmt(r.get('x_rps'), '8.2f')} "
              f"{fmt(r.get('x_cpu'), '6.2f')} {fmt(r.get('added_p99_us'), '8.0f')}  {st}")
    print("\ntargets (ztproxy ES256, caches on, vs the bare aiohttp proxy):")
    for label, value, ok in checks:
        verdict = "n/a" if ok is None else ("PASS" if ok else "MISS")
        print(f"  {verdict:<5} {label}: {value}")


def machine() -> dict[str, Any]:
    import aiohttp

    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    try:
        import uvloop
        loop = f"uvloop {getattr(uvloop, '__version__', '?')}"
    except ImportError:
        loop = "asyncio"
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version(), "aiohttp": aiohttp.__version__,
            "event_loop": loop, "nginx": shutil.which("nginx")}


def scaling(rows: list[dict[str, Any]], runs: list[dict[str, Any]]) -> None:
    """In the workers section: each target's req/s and CPU/request against its 1-worker
    self in the same repeat."""
    for row in rows:
        if row["section"] != "workers" or "-w" not in row["target"]:
            continue
        kind = row["target"].split("-w")[0]
        mine = [r for r in runs if r["section"] == "workers" and r["target"] == row["target"]]
        pairs = [(r, x) for r in mine for x in runs
                 if x["section"] == "workers" and x["target"] == kind and x["rep"] == r["rep"]]
        if pairs:
            row["scale_rps_vs_w1"] = med(r["rps"] / x["rps"] for r, x in pairs if x["rps"])
            row["scale_cpu_vs_w1"] = med(r["cpu_us_per_req"] / x["cpu_us_per_req"]
                                         for r, x in pairs
                                         if r["cpu_us_per_req"] and x["cpu_us_per_req"])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="ztproxy vs a bare aiohttp mTLS proxy")
    p.add_argument("--quick", action="store_true", help="one repeat, short runs (< 40 s)")
    p.add_argument("--workers", default="1", help="comma list, e.g. 1,2: scaling section")
    p.add_argument("--repeats", type=int)
    p.add_argument("--duration", type=float, help="seconds measured per run")
    p.add_argument("--warmup", type=float)
    p.add_argument("--concurrency", type=int, default=16, help="keep-alive connections")
    p.add_argument("--handshake-conc", type=int, default=8)
    p.add_argument("--rate-conc", type=int, default=64, help="connection pool, rate mode")
    p.add_argument("--max-requests", type=int, default=200_000, help="per run")
    p.add_argument("--distinct", type=int, default=25, help="paths per request template")
    p.add_argument("--profile", dest="profile", action="store_true", default=None)
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                   help="event loop of both proxies (auto: uvloop when installed, as "
                        "`ztproxy run` does)")
    p.add_argument("--out", type=Path, help="JSON result file")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.duration = args.duration or (1.5 if args.quick else 3.5)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 0.5)
    args.profile = (not args.quick) if args.profile is None else args.profile
    args.worker_counts = [int(x) for x in args.workers.split(",") if x.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        print("needs 2 CPUs (proxy on CPU 0, load generator on CPU 1)", file=sys.stderr)
        return 2
    started = time.monotonic()
    zt_targets = ["zt", "zt-nocache"] if args.quick else list(TARGETS)
    with tempfile.TemporaryDirectory(prefix="ztbench-") as tmp:
        stack = Stack(Path(tmp), with_rsa=any("rs256" in t for t in zt_targets))
        try:
            return _main(args, stack, zt_targets, started)
        finally:
            stack.close()


def _main(args: argparse.Namespace, stack: Stack, zt_targets: list[str],
          started: float) -> int:
    plans = {alg: build_plans(stack.pki, stack.rsa, alg, args.distinct)
             for alg in {TARGETS[t][0] for t in zt_targets}}
    if args.loop != "auto":
        stack.loop = args.loop
    stack.loop_note = preflight(stack, plans["ES256"])
    stack.start_bare()
    for name in zt_targets:
        if name not in stack.procs:
            alg, caches = TARGETS[name]
            stack.start_zt(name, alg, caches)
    ceilings = ["nginx"] if stack.start_nginx() else []
    if not ceilings:
        print("nginx not on PATH: native ceiling skipped", flush=True)
    stack.wait_all()
    print(f"event loop of both proxies: {stack.loop} {stack.loop_note or ''}", flush=True)
    b = Bench(stack, args, plans)
    rate = run_sections(b, zt_targets, ceilings)
    if args.worker_counts != [1]:
        run_workers(b, args.worker_counts)
    hot = profile(b, "zt", 8.0 if not args.quick else 4.0) if args.profile else None
    metrics = {name: scrape(stack.procs[name]) for name in zt_targets}
    audits: dict[str, Any] = {}
    for name in list(stack.procs):
        proc = stack.procs[name]
        code = stack.stop(name)
        if name.startswith("zt"):
            audits[name] = {"exit": code, **audit_check(proc, stack.pki)}
    rows = summarize(b.runs)
    scaling(rows, b.runs)
    checks = targets_check(rows)
    print_table(rows, checks)
    print("\nztproxy counters (cache hits, audit records):")
    for name in zt_targets:
        print(f"  {name:<17} " + ", ".join(f"{k.replace('ztproxy_', '')}={v:.0f}"
                                           for k, v in sorted(metrics[name].items())))
        print(f"  {'':<17} audit: {audits.get(name)}")
    if hot:
        print(f"\nprofile of zt (py-spy, {hot['samples']} samples); threads: "
              + ", ".join(f"{t} {p}%" for t, p in hot["threads"]))
        print("top self time (innermost ztproxy caller):")
        for frame, pct, caller in hot["self"][:15]:
            print(f"  {pct:5.1f}%  {frame:<55} <- {caller}")
        print("top ztproxy functions (inclusive):")
        for frame, pct in hot["inclusive_ztproxy"][:15]:
            print(f"  {pct:5.1f}%  {frame}")
    result = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(),
              "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in
                       vars(args).items()},
              "event_loop": stack.loop, "event_loop_note": stack.loop_note,
              "rate_half_bare": rate, "summary": rows, "targets": checks, "runs": b.runs,
              "metrics": metrics, "audit": audits, "profile": hot,
              "wall_seconds": round(time.monotonic() - started, 1)}
    RESULTS.mkdir(exist_ok=True)
    out = args.out or RESULTS / f"proxy-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {out} ({result['wall_seconds']} s)")
    bad = sum(r["mismatches"] + r["errors"] for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
