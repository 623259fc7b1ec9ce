"""`ztproxy run --config FILE [--workers N]` and `ztproxy check-config --config FILE`.

Both use `config.load.load_config`, the loader the server runs, and the same preflight
(`server.preflight`): the TLS contexts are built, the policy is compiled and passes every
load-time check of the embedded engine (`policy.load_policy`: modules, builtin
allowlist, rule/data conflicts, the decision rule of every decision path), the audit
directory is opened for writing, and a remote OPA is asked whether it answers (a
warning, not a failure). Every startup failure is one line on stderr naming the key,
file or port, and a non-zero exit (`ztproxy --debug ...` adds the traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys

from ..config.load import Config, load_config
from ..errors import ConfigError
from ..ops.logs import configure_logging, silenced
from ..policy import LoadError, load_policy
from ..tls.context import TLSMaterialError, server_context, upstream_context
from ..tls.trust import TrustMaterialError, load_trust_store


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the proxy")
    p.add_argument("--config", "-c", required=True, help="YAML config file")
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="worker processes forked by one supervisor that binds the port "
        "once; each has its own audit chain (default 0: one per core)",
    )
    p.add_argument(
        "--accept-recovery",
        action="store_true",
        help="start even though the audit log's last checkpoint does not verify "
        "under the configured key: set what does not verify aside "
        "(quarantine/) and say so in a signed recovery record",
    )
    p.set_defaults(func=cmd_run)
    c = sub.add_parser("check-config", help="validate a config file and summarize it")
    c.add_argument("--config", "-c", required=True, help="YAML config file")
    c.set_defaults(func=cmd_check_config)


def _load_or_report(path: str) -> Config | None:
    try:
        config = load_config(path)
        server_context(config.listener, load_trust_store(config.trust_domains))
        for route in config.routes:
            upstream_context(route)
        return config
    except ConfigError as exc:
        if len(exc.problems) == 1:  # one line naming the file and the key path
            only = exc.problems[0]
            print(only if only.startswith(f"{path}:") else f"{path}: {only}", file=sys.stderr)
        else:
            print(f"{path}: {len(exc.problems)} problems:", file=sys.stderr)
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
    except (TLSMaterialError, TrustMaterialError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
    return None


def summary(config: Config) -> str:
    lst = config.listener
    lines = [
        f"listener   https://{lst.address}:{lst.port}  (mTLS, TLS >= {lst.min_tls_version}"
        f"{', CRL' if any(td.crl_file for td in config.trust_domains) else ''})",
        f"trust      {', '.join(config.trust_domain_names)}",
        "routes",
    ]
    for r in config.routes:
        lines.append(
            f"  {r.name:<16} {(r.host or '*')}{r.path_prefix:<20} -> {r.service:<12}"
            f" {r.upstream}  user={r.user.value} device={r.device.value}"
        )
    lines.append(
        "issuers    "
        + (", ".join(f"{i.name} ({i.kind})" for i in config.identity.issuers) or "none")
    )
    lines.append(f"policy     {config.policy.engine}, decision {config.policy.decision_path}")
    lines.append(f"audit      {config.audit.dir}")
    if config.admin.enabled:
        lines.append(f"admin      http://{config.admin.address}:{config.admin.port}")
    return "\n".join(lines)


def _preflight(config: Config) -> None:
    """Raises (one-line message) on what cannot start; prints the warnings."""
    from ..server.preflight import preflight

    for warning in asyncio.run(preflight(config)):
        print(f"ztproxy: warning: {warning}", file=sys.stderr)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load_or_report(args.config)
    if config is None:
        return 1
    if not _policy_loads(args.config, config):
        return 1
    with silenced():  # the engine's progress lines are not news here; errors are raised
        _preflight(config)
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
            config, audit=dataclasses.replace(config.audit, accept_recovery=True)
        )
    # run_workers binds the ports first (a busy port is the one line you see), then
    # runs the same preflight as check-config, then forks the workers
    try:
        return run_workers(config, args.workers, debug=bool(getattr(args, "debug", False)))
    except RecoveryRefused:
        return 1  # said in one line by the audit log (audit_recovery_refused)


def _policy_loads(path: str, config: Config) -> bool:
    """Every load-time check of the embedded policy; False (one line said) when
    refused. The engine made here is dropped; each worker loads its own."""
    try:
        load_policy(config.policy, [r.decision_path for r in config.routes if r.decision_path])
    except LoadError as exc:
        print(f"{path}: policy does not load: {exc}", file=sys.stderr)
        return False
    return True
