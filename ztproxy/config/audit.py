"""The `audit:` section of the config: where the tamper-evident log lives and how
often it is signed.

Takes a `Node` over the section (absent reads as empty) and returns a frozen
`AuditConfig`; every problem is recorded with its key path, never raised here.
The signing key is always a path (never inline) and must hold an Ed25519 private
key; it is checked here so that `check-config` catches a wrong file before serving.

    audit:
      dir: audit-log                    # default, relative to the config file
      signing_key: certs/audit/audit-private.pem   # required
      origin: ztproxy                   # checkpoints of worker N say "<origin>/w<N>"
      checkpoint_every_records: 1000
      checkpoint_interval_seconds: 10   # when anything was written
      heartbeat_seconds: 60             # when idle
      segment_max_bytes: 67108864
      segment_max_age_seconds: 3600
      queue_size: 10000
      flush_interval_ms: 50             # the writer writes at most this often
      fsync: checkpoint                 # checkpoint | always | never
      on_failure: deny                  # deny (503 until writable) | allow (logs loudly)
      previous_keys: []                 # public keys of rotated-out signing keys

`ztproxy run --accept-recovery` sets `accept_recovery` for one start (see
docs/auditors.md, "Recovery").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from .reader import Node

FsyncMode = Literal["checkpoint", "always", "never"]
FailureMode = Literal["deny", "allow"]

FSYNC_MODES: tuple[str, ...] = ("checkpoint", "always", "never")
FAILURE_MODES: tuple[str, ...] = ("deny", "allow")
DEFAULT_DIR = "audit-log"


def origin_problem(origin: str) -> str | None:
    """Why `origin` cannot name a log in a signed note (None when it can)."""
    if not origin:
        return "must not be empty"
    if len(origin) > 200:
        return "must be at most 200 characters"
    if any(c.isspace() or c == "+" or not c.isprintable() for c in origin):
        return "must not contain spaces, '+' or control characters"
    return None


@dataclass(frozen=True, slots=True)
class AuditConfig:
    dir: str
    signing_key: str
    origin: str = "ztproxy"
    checkpoint_every_records: int = 1000
    checkpoint_interval_seconds: float = 10.0
    heartbeat_seconds: float = 60.0
    segment_max_bytes: int = 64 * 1024 * 1024
    segment_max_age_seconds: float = 3600.0
    queue_size: int = 10000
    flush_interval_ms: float = 50.0
    fsync: FsyncMode = "checkpoint"
    on_failure: FailureMode = "deny"
    # Not a config key: set by `ztproxy run --accept-recovery` for one start (audited).
    accept_recovery: bool = False
    # Public keys (PEM or vkey files) that signed this directory's checkpoints before a
    # key rotation: a restart continues a chain whose last checkpoint one of them signed.
    previous_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problem = origin_problem(self.origin)
        if problem:
            raise ValueError(f"origin {problem}")
        if self.fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_MODES)}")
        if self.on_failure not in FAILURE_MODES:
            raise ValueError(f"on_failure must be one of {', '.join(FAILURE_MODES)}")
        if self.checkpoint_every_records < 1 or self.queue_size < 1:
            raise ValueError("checkpoint_every_records and queue_size must be at least 1")
        if (
            min(
                self.checkpoint_interval_seconds,
                self.heartbeat_seconds,
                self.segment_max_age_seconds,
            )
            <= 0
            or self.segment_max_bytes < 1
        ):
            raise ValueError("intervals and sizes must be positive")
        if not 0 <= self.flush_interval_ms <= 1000:
            raise ValueError("flush_interval_ms must be between 0 and 1000")


def _check_signing_key(node: Node, path: str) -> None:
    try:
        with open(path, "rb") as fh:
            key = load_pem_private_key(fh.read(), password=None)
    except OSError as exc:
        node.error(f"cannot read: {exc.strerror}", "signing_key")
        return
    except (ValueError, TypeError):
        node.error("not an unencrypted PEM private key", "signing_key")
        return
    if not isinstance(key, Ed25519PrivateKey):
        node.error("must be an Ed25519 private key (see `ztproxy audit keygen`)", "signing_key")


def parse_audit(node: Node) -> AuditConfig:
    """Parse the `audit` section. An absent section means the defaults, but the
    signing key is always required: the proxy never runs with an unsigned log."""
    default_dir = os.path.normpath(os.path.join(node.base_dir, DEFAULT_DIR))
    directory = node.path_value("dir", must_exist=False, default=default_dir)
    signing_key = node.path_value("signing_key", required=True)
    if isinstance(signing_key, str) and signing_key and os.path.isfile(signing_key):
        _check_signing_key(node, signing_key)
    origin = node.str("origin", "ztproxy")
    problem = origin_problem(origin) if isinstance(origin, str) else None
    if problem:
        node.error(problem, "origin")
        origin = "ztproxy"
    every = node.int("checkpoint_every_records", 1000, min=1, max=10_000_000)
    interval = node.number("checkpoint_interval_seconds", 10.0, min=0.001, max=86400)
    heartbeat = node.number("heartbeat_seconds", 60.0, min=0.001, max=86400)
    seg_bytes = node.int("segment_max_bytes", 64 * 1024 * 1024, min=4096, max=2**40)
    seg_age = node.number("segment_max_age_seconds", 3600.0, min=1, max=30 * 86400)
    queue_size = node.int("queue_size", 10000, min=1, max=10_000_000)
    flush_ms = node.number("flush_interval_ms", 50.0, min=0, max=1000)
    fsync = node.choice("fsync", FSYNC_MODES, "checkpoint")
    on_failure = node.choice("on_failure", FAILURE_MODES, "deny")
    previous = _previous_keys(node)
    node.finish()
    return AuditConfig(
        dir=str(directory),
        signing_key=str(signing_key or ""),
        origin=str(origin),
        checkpoint_every_records=int(every),
        checkpoint_interval_seconds=float(interval),
        heartbeat_seconds=float(heartbeat),
        segment_max_bytes=int(seg_bytes),
        segment_max_age_seconds=float(seg_age),
        queue_size=int(queue_size),
        flush_interval_ms=float(flush_ms),
        fsync=cast(FsyncMode, fsync),
        on_failure=cast(FailureMode, on_failure),
        previous_keys=previous,
    )


def _previous_keys(node: Node) -> tuple[str, ...]:
    """Paths of rotated-out public keys (checked to exist here; parsed at start)."""
    out: list[str] = []
    for i, value in enumerate(node.str_list("previous_keys")):
        path = (
            value if os.path.isabs(value) else os.path.normpath(os.path.join(node.base_dir, value))
        )
        if not os.path.isfile(path):
            node.error(f"file not found: {value}", f"previous_keys[{i}]")
            continue
        out.append(path)
    return tuple(out)
