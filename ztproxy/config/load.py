"""Loads the YAML config file into one frozen `Config`.

Each section has its own module and parser (`core` for listener, routes, limits,
timeouts, headers, admin, logging; `identity`, `policy`, `audit` for theirs). All
problems of all sections are collected and raised together as one `ConfigError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import yaml

from ..errors import ConfigError
from ..model import Route
from .audit import AuditConfig, parse_audit
from .core import (
    AdminConfig,
    HeadersConfig,
    LimitsConfig,
    ListenerConfig,
    LoggingConfig,
    TimeoutsConfig,
    TrustDomainConfig,
    is_old_trust_form,
    parse_admin,
    parse_headers,
    parse_limits,
    parse_listener,
    parse_logging,
    parse_routes,
    parse_timeouts,
    parse_trust_domains,
)
from .identity import IdentityConfig, parse_identity
from .policy import PolicyConfig, parse_policy
from .reader import Node, Problems, read_yaml


@dataclass(frozen=True, slots=True)
class Config:
    listener: ListenerConfig
    trust_domains: tuple[TrustDomainConfig, ...]
    routes: tuple[Route, ...]
    limits: LimitsConfig
    timeouts: TimeoutsConfig
    headers: HeadersConfig
    identity: IdentityConfig
    policy: PolicyConfig
    audit: AuditConfig
    admin: AdminConfig
    logging: LoggingConfig
    source: str = ""

    @property
    def trust_domain_names(self) -> tuple[str, ...]:
        return tuple(td.name for td in self.trust_domains)


def parse_config(data: Any, base_dir: str = ".", source: str = "") -> Config:
    problems = Problems()
    root = Node(data if data is not None else {}, "", problems, base_dir)
    if not root.is_mapping():
        raise ConfigError([f"<root>: must be a mapping, not {type(data).__name__}"])
    old_form = is_old_trust_form(root)
    trust_domains = parse_trust_domains(root)
    cfg = Config(
        listener=parse_listener(root.section("listener", required=True), old_form=old_form),
        trust_domains=trust_domains,
        routes=parse_routes(root),
        limits=parse_limits(root.section("limits")),
        timeouts=parse_timeouts(root.section("timeouts")),
        headers=parse_headers(root.section("headers")),
        identity=parse_identity(root.section("identity")),
        policy=parse_policy(root.section("policy")),
        audit=parse_audit(root.section("audit")),
        admin=parse_admin(root.section("admin")),
        logging=parse_logging(root.section("logging")),
        source=source,
    )
    root.finish()
    _cross_check(cfg, problems)
    if problems.items:
        raise ConfigError(problems.items)
    return cfg


def _cross_check(cfg: Config, problems: Problems) -> None:
    names = {i.name for i in cfg.identity.issuers}
    kinds = {i.kind for i in cfg.identity.issuers}
    for i, route in enumerate(cfg.routes):
        if route.user.value != "none" and "user" not in kinds:
            problems.add(
                f"routes[{i}].user",
                f"is {route.user.value} but no identity issuer "
                "of kind user is configured (write `user: none` to serve without)",
            )
        if route.device.value != "none" and "device" not in kinds:
            problems.add(
                f"routes[{i}].device",
                f"is {route.device.value} but no identity "
                "issuer of kind device is configured (write `device: none`)",
            )
    del names


def load_config(path: str) -> Config:
    """Read and validate `path`. Raises ConfigError listing every problem."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = read_yaml(fh)
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError([f"{path}: not valid YAML{where}"]) from None
    return parse_config(data, os.path.dirname(os.path.abspath(path)), source=path)
