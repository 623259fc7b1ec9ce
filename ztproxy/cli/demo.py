"""`ztproxy demo [--keep] [--audit-dir DIR]`: the proxy, two upstreams and a scripted
set of requests on one machine, with the embedded engine and the shipped policies.

Thin layer over `ztproxy.devtools.demo` (which runs everything); this module owns the
temporary directory, the printed table and, with `--keep`, the curl commands and the
wait for Ctrl-C. Exit 0 when every scripted request got its expected status and the
audit log verifies, 1 otherwise, 2 when the demo cannot start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from ..devtools.demo import DemoReport, Outcome, find_policies, prepare_demo, run_demo
from ..devtools.demo_lab import DEVICE_HEADER, DemoLab, Tokens, audit_key
from ..errors import ConfigError
from ..ops.logs import configure_logging

TOKEN_TTL = 3600


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the proxy with example services and scripted requests",
        description="Make a dev PKI in a temporary directory, start two example services "
        "and the proxy (embedded Rego, shipped policies), send scripted requests over "
        "mutual TLS, print what happened, verify the audit log, and clean up.",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="leave everything running and print curl commands; Ctrl-C stops",
    )
    p.add_argument(
        "--audit-dir",
        metavar="DIR",
        help="write the audit log and its public key into DIR and keep them",
    )
    p.add_argument(
        "--policies", metavar="DIR", help="policy root to load instead of the shipped policies/"
    )
    p.set_defaults(func=cmd_demo)


def render_table(outcomes: Sequence[Outcome]) -> str:
    head = (
        "#",
        "scenario",
        "workload",
        "user",
        "device",
        "request",
        "decision",
        "status",
        "reason",
        "",
    )
    rows = [head]
    for i, o in enumerate(outcomes, 1):
        s = o.scenario
        reason = o.reason + (f" ({', '.join(o.policy_reasons)})" if o.policy_reasons else "")
        rows.append(
            (
                str(i),
                s.label,
                s.workload or "(no cert)",
                s.user or "-",
                s.device or "-",
                s.request,
                o.decision,
                str(o.status) if o.status is not None else "refused",
                reason,
                "ok" if o.expected else "UNEXPECTED",
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths).rstrip())
    return "\n".join(lines)


def print_report(report: DemoReport, out: TextIO, *, table: bool = True) -> None:
    if table:
        print(render_table(report.outcomes), file=out)
    bad = [o for o in report.outcomes if not o.expected]
    print(
        f"\n{len(report.outcomes) - len(bad)}/{len(report.outcomes)} requests answered as expected",
        file=out,
    )
    print(f"audit log: {report.records} records in {report.audit_dir}", file=out)
    for line in report.verdict.lines:
        print(f"  {line}", file=out)
    print(f"audit verdict: {'VALID' if report.verdict.ok else 'INVALID'}", file=out)


def _write_token(path: Path, token: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    return path


def curl_commands(lab: DemoLab, work: Path) -> list[tuple[str, str]]:
    """(what it shows, the command), with paths relative to `work` (the commands are
    run from there). Tokens go to 0600 files under work/tokens, read by `$(cat ...)`."""
    pki, url = lab.pki, lab.base_url
    tokens = Tokens(pki)
    (work / "tokens").mkdir(exist_ok=True)
    alice = _write_token(
        work / "tokens" / "alice.jwt", tokens.user("alice", ["payments-operator"], ttl=TOKEN_TTL)
    )
    laptop = _write_token(
        work / "tokens" / "laptop-1.jwt",
        tokens.device("laptop-1", "checkout", {"trust_level": 3, "managed": True}, ttl=TOKEN_TTL),
    )

    def rel(p: Path) -> str:
        return shlex.quote(str(p.relative_to(work)))

    def curl(workload: str | None, path: str, *, extra: str = "") -> str:
        tls = f"--cacert {rel(pki.ca_cert)}"
        if workload is not None:
            cert, key = pki.workloads[workload]
            tls += f" --cert {rel(cert)} --key {rel(key)}"
        lines = [
            f"curl -sS {tls}",
            f'-H "Authorization: Bearer $(cat {rel(alice)})"',
            f'-H "{DEVICE_HEADER}: Bearer $(cat {rel(laptop)})"',
            f"{extra} {shlex.quote(url + path)}".strip(),
        ]
        return " \\\n    ".join(lines)

    out = [
        ("allowed: checkout, alice, laptop-1", curl("checkout", "/api/v1/charges")),
        (
            "denied by segmentation (checkout may not call reports)",
            curl("checkout", "/reports/daily"),
        ),
        (
            "device token bound to checkout, presented with batch's certificate",
            curl("batch", "/api/v1/charges"),
        ),
        ("no client certificate (the handshake is refused)", curl(None, "/api/v1/charges")),
        (
            "path traversal, sent as is",
            curl("checkout", "/api/v1/charges/../../reports/daily", extra="--path-as-is"),
        ),
    ]
    if lab.proxy is not None and lab.proxy.admin_port:
        base = f"http://127.0.0.1:{lab.proxy.admin_port}"
        out += [
            ("metrics", f"curl -sS {base}/metrics | grep ^ztproxy_requests_total"),
            ("readiness", f"curl -sS {base}/readyz"),
        ]
    return out


async def _wait_for_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _keep_hook(work: Path, out: TextIO) -> Any:
    async def on_ready(lab: DemoLab, outcomes: Sequence[Outcome]) -> None:
        print(render_table(outcomes), file=out)
        commands = await asyncio.to_thread(curl_commands, lab, work)
        print(
            f"\nthe proxy listens on {lab.base_url}. Try these from {work}\n"
            f"(cd {shlex.quote(str(work))}; the tokens are valid for {TOKEN_TTL // 60} "
            "minutes):",
            file=out,
        )
        for title, command in commands:
            print(f"\n# {title}\n{command}", file=out)
        print(f"\naudit log: {lab.audit_dir}\nrunning; press Ctrl-C to stop", file=out, flush=True)
        await _wait_for_signal()
        print("\nstopping", file=out)

    return on_ready


def _check_audit_dir(raw: str | None) -> Path | None:
    if raw is None:
        return None
    path = Path(raw).resolve()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"--audit-dir {raw}: exists and is not an empty directory")
    path.mkdir(parents=True, exist_ok=True)
    return path


def cmd_demo(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        policies = find_policies(args.policies)
        keep_dir = _check_audit_dir(args.audit_dir)
    except OSError as exc:  # FileExistsError, FileNotFoundError, permissions
        print(f"ztproxy demo: {exc}", file=sys.stderr)
        return 2
    configure_logging("warning", "auto")  # the table is the output, not request logs
    with tempfile.TemporaryDirectory(prefix="ztproxy-demo-") as tmp:
        work = Path(tmp)
        audit_dir = keep_dir or work / "audit"
        print(f"dev PKI in {work} (removed on exit); policies from {policies}", file=out)
        pki = prepare_demo(work)
        hook = _keep_hook(work, out) if args.keep else None
        try:
            report = asyncio.run(run_demo(pki, audit_dir, policies, on_ready=hook))
        except ConfigError as exc:
            print("ztproxy demo: config problems:\n  " + "\n  ".join(exc.problems), file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # before --keep's handler: run_demo stopped everything
            print("\nztproxy demo: interrupted", file=sys.stderr)
            return 130
        print_report(report, out, table=not args.keep)
        if keep_dir is not None:
            key = shutil.copy(audit_key(pki), keep_dir / "audit-public.pem")
            print(
                f"\nkept {keep_dir}; verify it with:\n  ztproxy audit verify "
                f"{shlex.quote(str(keep_dir))} --key {shlex.quote(str(key))}",
                file=out,
            )
    return 0 if report.ok else 1
