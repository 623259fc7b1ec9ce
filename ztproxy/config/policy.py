"""Config section `policy:`: which engine decides, where its Rego lives, and its limits.

Takes the `policy` Node of the config file; returns a frozen `PolicyConfig`. Paths are
resolved against the config file's directory. An absent section gives a usable default:
the embedded engine over `policies/` beside the config file. Nothing here is trusted
input at request time; a bad value is reported with its key path (`policy.timeout_ms`).
The bearer token for OPA is only ever a file path here, never its content.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from .bundle import BundleConfig, parse_bundle
from .reader import Node

_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DEFAULT_DECISION_PATH = "ztproxy/authz/decision"


def check_decision_path(value: str) -> str | None:
    """The problem with a decision path (slash form, as in OPA's Data API), or None.

    Each segment must be a Rego identifier, so the path can be turned into a rule
    reference (`data.a.b.c`) without quoting and can never smuggle a query."""
    if not value or value.startswith("/") or value.endswith("/"):
        return "must look like ztproxy/authz/decision (slash-separated, no leading slash)"
    for segment in value.split("/"):
        if not _SEGMENT.fullmatch(segment):
            return f"segment {segment!r} is not a Rego identifier"
    return None


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    engine: str = "embedded"  # "embedded" | "opa"
    decision_path: str = DEFAULT_DECISION_PATH
    policy_dirs: tuple[str, ...] = ("policies",)
    data_dirs: tuple[str, ...] = ()
    opa_url: str | None = None
    opa_ca_file: str | None = None
    opa_cert_file: str | None = None
    opa_key_file: str | None = None
    opa_token_file: str | None = None
    timeout_ms: int = 250
    cache_ttl_ms: int = 1000
    cache_max_entries: int = 10000
    breaker_failures: int = 5
    breaker_cooldown_ms: int = 5000
    watch: bool = True
    watch_interval_ms: int = 2000
    bundle: BundleConfig | None = None  # policies from an OPA bundle server (embedded only)


def _dirs(node: Node, key: str, default: tuple[str, ...], must_exist: bool) -> tuple[str, ...]:
    out = []
    for i, raw in enumerate(node.str_list(key, default)):
        resolved = raw if os.path.isabs(raw) else os.path.normpath(os.path.join(node.base_dir, raw))
        if must_exist and not os.path.isdir(resolved):
            node.error(f"directory not found: {raw}", f"{key}[{i}]" if node.has(key) else key)
        out.append(resolved)
    return tuple(out)


_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def _check_url(node: Node, url: str | None, engine: str) -> str | None:
    if engine != "opa":
        return url
    if url is None:
        node.error("is required when engine is opa", "opa_url")
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        node.error("must be an http(s) URL such as http://127.0.0.1:8181", "opa_url")
    elif parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        node.error("must be scheme://host[:port] only (the Data API path is added)", "opa_url")
    elif parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        # a decision fetched in the clear can be forged on the way: http for a local
        # sidecar only, as for jwks_uri
        node.error("must be an https URL (plain http only for a loopback host)", "opa_url")
    return url


def parse_policy(node: Node) -> PolicyConfig:
    """Read the `policy:` section. Every problem is recorded on the node."""
    d = PolicyConfig()
    engine = node.choice("engine", ("embedded", "opa"), d.engine)
    decision_path = node.str("decision_path", d.decision_path)
    if isinstance(decision_path, str):
        problem = check_decision_path(decision_path)
        if problem:
            node.error(problem, "decision_path")
            decision_path = d.decision_path
    else:
        decision_path = d.decision_path
    bundle = parse_bundle(node)
    if bundle is not None and engine == "opa":
        # OPA polls its own bundles (its `bundles:` config); ztproxy does not fetch for it
        node.error(
            "is for the embedded engine only (with engine: opa, configure OPA's own bundles)",
            "bundle",
        )
        bundle = None
    if bundle is not None and (node.has("policy_dirs") or node.has("data_dirs")):
        node.error(
            "policy_dirs / data_dirs and bundle exclude each other (the bundle is the policy)",
            "bundle",
        )
    embedded = engine == "embedded" and bundle is None
    policy_dirs = _dirs(node, "policy_dirs", d.policy_dirs, must_exist=embedded)
    if embedded and not policy_dirs:
        node.error("needs at least one directory for the embedded engine", "policy_dirs")
    data_dirs = _dirs(node, "data_dirs", d.data_dirs, must_exist=embedded)
    opa_url = _check_url(node, node.str("opa_url"), engine)
    ca = node.path_value("opa_ca_file")
    cert = node.path_value("opa_cert_file")
    key = node.path_value("opa_key_file")
    token = node.path_value("opa_token_file")
    if (cert is None) != (key is None):
        node.error("opa_cert_file and opa_key_file go together", "opa_cert_file")
    if (ca or cert) and opa_url and not opa_url.startswith("https://"):
        node.error("TLS files are set but opa_url is not https", "opa_url")
    cfg = PolicyConfig(
        engine=engine,
        decision_path=decision_path,
        policy_dirs=policy_dirs,
        data_dirs=data_dirs,
        opa_url=opa_url,
        opa_ca_file=ca,
        opa_cert_file=cert,
        opa_key_file=key,
        opa_token_file=token,
        timeout_ms=node.int("timeout_ms", d.timeout_ms, min=1, max=60_000),
        cache_ttl_ms=node.int("cache_ttl_ms", d.cache_ttl_ms, min=0, max=3_600_000),
        cache_max_entries=node.int("cache_max_entries", d.cache_max_entries, min=1, max=10_000_000),
        breaker_failures=node.int("breaker_failures", d.breaker_failures, min=1, max=1000),
        breaker_cooldown_ms=node.int(
            "breaker_cooldown_ms", d.breaker_cooldown_ms, min=1, max=3_600_000
        ),
        watch=node.bool("watch", d.watch),
        watch_interval_ms=node.int("watch_interval_ms", d.watch_interval_ms, min=50, max=3_600_000),
        bundle=bundle,
    )
    node.finish()
    return cfg
