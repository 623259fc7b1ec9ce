"""`ztproxy run --config FILE [--workers N]` and `ztproxy check-config --config FILE`.

Both use `config.load.load_config`, the loader the server runs. check-config also
builds the TLS contexts, so unusable certificate material is caught before a deploy.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ..config.load import Config, load_config
from ..errors import ConfigError
from ..ops.logs import configure_logging
from ..tls.context import TLSMaterialError, server_context, upstream_context


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the proxy")
    p.add_argument("--config", "-c", required=True, help="YAML config file")
    p.add_argument("--workers", type=int, default=0,
                   help="worker processes sharing the port with SO_REUSEPORT, each with its "
                        "own audit chain (default 0: one per core)")
    p.add_argument("--accept-recovery", action="store_true",
                   help="start even though the audit log's last checkpoint does not verify "
                        "under the configured key: set what does not verify aside "
                        "(quarantine/) and say so in a signed recovery record")
    p.set_defaults(func=cmd_run)
    c = sub.add_parser("check-config", help="validate a config file and summarize it")
    c.add_argument("--config", "-c", required=True, help="YAML config file")
    c.set_defaults(func=cmd_check_config)


def _load_or_report(path: str) -> Config | None:
    try:
        config = load_config(path)
        server_context(config.listener)
        for route in config.routes:
            upstream_context(route)
        return config
    except ConfigError as exc:
        print(f"{path}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
    except TLSMaterialError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
    return None


def summary(config: Config) -> str:
    lst = config.listener
    lines = [
        f"listener   https://{lst.address}:{lst.port}  (mTLS, TLS >= {lst.min_tls_version}"
        f"{', CRL' if lst.crl_file else ''})",
        f"trust      {', '.join(config.trust_domains)}",
        "routes",
    ]
    for r in config.routes:
        lines.append(f"  {r.name:<16} {(r.host or '*')}{r.path_prefix:<20} -> {r.service:<12}"
                     f" {r.upstream}  user={r.user.value} device={r.device.value}")
    lines.append("issuers    " + (", ".join(f"{i.name} ({i.kind})"
                                            for i in config.identity.issuers) or "none"))
    lines.append(f"policy     {config.policy.engine}, decision {config.policy.decision_path}")
    lines.append(f"audit      {config.audit.dir}")
    if config.admin.enabled:
        lines.append(f"admin      http://{config.admin.address}:{config.admin.port}")
    return "\n".join(lines)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load_or_report(args.config)
    if config is None:
        return 1
    print(f"{args.config}: OK")
    print(summary(config))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = _load_or_report(args.config)
    if config is None:
        return 1
    configure_logging(config.logging.level, config.logging.format)
    from ..audit import RecoveryRefused
    from ..server.workers import run_workers

    if getattr(args, "accept_recovery", False):
        config = dataclasses.replace(
            config, audit=dataclasses.replace(config.audit, accept_recovery=True))
    try:
        return run_workers(config, args.workers)
    except RecoveryRefused:
        return 1  # said in one line by the audit log (audit_recovery_refused)
