"""Stage 5's subsystem: authorization decisions from Rego, embedded or remote.

`build_decider(config)` gives the `seams.Decider` the pipeline calls. Inside, split by
concern: `engine` (the PolicyEngine seam and reason codes), `embedded` (regorus) and
`remote` (OPA over REST, its answer parsed by `strictjson`), `loader` and `revision`
(files -> engine, SHA-256), `checks` (load-time refusals read from regorus's AST),
`yamldata` (YAML data as OPA reads it), `prepared` (one serialization of the input for
digest, cache key and engines), `result` (raw result -> Decision, fail closed),
`cache`, `breaker`, `decider` (the order of work), `testrunner` (`ztproxy policy
test`), `evaluate` (`ztproxy policy eval`), `bundle/` (OPA bundles: read, verify,
build, poll; the embedded engine fed from a bundle server).

For the server: `build_decider(...)` then `await decider.start()`, which either loads
a fully checked policy or raises `errors.ConfigError` whose one line names the file,
line and construct (`load_policy` gives the same check without a decider, raising
`LoadError`, one line).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from ..config.policy import PolicyConfig
from ..metrics import Metrics
from ..seams import Decider
from .breaker import Breaker
from .cache import DecisionCache
from .decider import PolicyDecider
from .embedded import EmbeddedEngine
from .engine import PolicyEngine
from .loader import Loaded, LoadError, load
from .remote import RemoteEngine

__all__ = ["LoadError", "PolicyDecider", "build_decider", "build_engine", "load_policy"]


def load_policy(config: PolicyConfig, decision_paths: Sequence[str] = ()) -> Loaded | None:
    """Every load-time check the server runs (check-config, start): the loaded policy,
    or None for the remote engine (OPA owns its policy). Raises `LoadError` (one line:
    file, line, construct). Blocking (reads files); the engine it returns is pinned to
    the calling thread."""
    if config.engine == "opa" or config.bundle is not None:
        return None  # the policy arrives later (OPA's own, or a bundle, checked on arrival)
    paths = tuple(dict.fromkeys((config.decision_path, *decision_paths)))
    return load(config.policy_dirs, config.data_dirs, decision_paths=paths)


def build_engine(
    config: PolicyConfig, decision_paths: Sequence[str] = (), metrics: Metrics | None = None
) -> PolicyEngine:
    if config.bundle is not None:  # parse_policy allows it for the embedded engine only
        from .bundle.engine import BundleEngine

        paths = tuple(dict.fromkeys((config.decision_path, *decision_paths)))
        return BundleEngine(config.bundle, decision_paths=paths, metrics=metrics)
    if config.engine == "opa":
        assert config.opa_url is not None, "parse_policy requires opa_url for engine opa"
        return RemoteEngine(
            config.opa_url,
            timeout_s=config.timeout_ms / 1000,
            ca_file=config.opa_ca_file,
            cert_file=config.opa_cert_file,
            key_file=config.opa_key_file,
            token_file=config.opa_token_file,
        )
    # every decision path (global and per route) must be defined by a rule at load
    paths = tuple(dict.fromkeys((config.decision_path, *decision_paths)))
    return EmbeddedEngine(config.policy_dirs, config.data_dirs, decision_paths=paths)


def build_decider(
    config: PolicyConfig,
    *,
    metrics: Metrics | None = None,
    clock: Callable[[], float] = time.monotonic,
    decision_paths: Sequence[str] = (),
) -> Decider:
    """The decider for `config`. Call `start()` before the first decision (it loads the
    policy or opens the OPA client) and `close()` on the way out. `decision_paths`: the
    routes' own decision paths, compiled at load along with the global one."""
    engine = build_engine(config, decision_paths, metrics)
    cache = DecisionCache(config.cache_ttl_ms / 1000, config.cache_max_entries, clock)
    # The breaker guards a remote dependency; an embedded evaluation error is a policy
    # bug for some inputs, not an outage, so it does not stop all decisions.
    breaker = (
        Breaker(config.breaker_failures, config.breaker_cooldown_ms / 1000, clock)
        if config.engine == "opa"
        else None
    )
    watch = (
        config.watch_interval_ms / 1000
        if config.watch and config.engine == "embedded" and config.bundle is None
        else None
    )
    return PolicyDecider(
        engine, cache=cache, breaker=breaker, metrics=metrics, watch_interval_s=watch
    )
