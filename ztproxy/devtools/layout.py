"""Dev PKI layout: `init_dev_pki` writes a CA, a server certificate, one X.509-SVID per
workload, the user and device token issuers (key + JWKS) and the audit key pair into one
directory, and returns where (`DevPki`, paths only).

Stage: none (tooling for `ztproxy certs init`, the demo, the bench and the tests). Takes an
output directory, a trust domain, workload names and an optional `now`; returns `DevPki`.
Trusts nothing: all material is freshly made by `pki.DevCA`, `mint` and `audit.keys`, for
dev only. Importable from `ztproxy.devtools.pki` as well (re-exported there).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Final

from ..audit.keys import generate_keypair
from .mint import generate_signing_key, jwks, public_jwk

__all__ = [
    "AUDIENCE",
    "DEFAULT_WORKLOADS",
    "DEVICE_ISSUER",
    "DEVICE_KID",
    "USER_ISSUER",
    "USER_KID",
    "DevPki",
    "init_dev_pki",
    "workload_spiffe_id",
]

USER_ISSUER: Final = "https://sso.dev.ztproxy.local"
DEVICE_ISSUER: Final = "https://devices.dev.ztproxy.local"
AUDIENCE: Final = "ztproxy"
USER_KID: Final = "user-1"
DEVICE_KID: Final = "device-1"
# "name" means namespace prod; "namespace/name" names the namespace.
DEFAULT_WORKLOADS: Final = ("checkout", "payments", "reports", "batch", "dev/intruder")


@dataclass(frozen=True, slots=True)
class DevPki:
    """Where `init_dev_pki` wrote everything (paths only; no key material held)."""

    root: Path
    trust_domain: str
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    workloads: Mapping[str, tuple[Path, Path]]
    spiffe_ids: Mapping[str, str]
    user_key: Path
    user_jwks: Path
    device_key: Path
    device_jwks: Path
    audit_dir: Path  # the audit signing key pair (ztproxy.audit.keys)
    user_issuer: str = USER_ISSUER
    device_issuer: str = DEVICE_ISSUER
    audience: str = AUDIENCE
    user_kid: str = USER_KID
    device_kid: str = DEVICE_KID
    written: tuple[Path, ...] = field(default=())


def workload_spiffe_id(trust_domain: str, entry: str) -> tuple[str, str]:
    """("checkout" | "dev/intruder") -> (name, spiffe://td/ns/<namespace>/sa/<name>)."""
    namespace, _, name = entry.rpartition("/")
    if not name or "/" in namespace:
        raise ValueError(f"workload {entry!r} must be 'name' or 'namespace/name'")
    return name, f"spiffe://{trust_domain}/ns/{namespace or 'prod'}/sa/{name}"


def _write_issuer(directory: Path, stem: str, kid: str) -> tuple[Path, Path]:
    from .pki import key_pem, write_private, write_public  # at call time: see init_dev_pki

    key = generate_signing_key("ES256")
    key_path, jwks_path = directory / f"{stem}.key", directory / f"{stem}.jwks.json"
    write_private(key_path, key_pem(key))
    body = json.dumps(jwks(public_jwk(key, kid, "ES256")), indent=2) + "\n"
    write_public(jwks_path, body.encode("utf-8"))
    return key_path, jwks_path


def init_dev_pki(
    out_dir: str | Path,
    *,
    force: bool = False,
    trust_domain: str = "corp.example",
    workloads: Sequence[str] = DEFAULT_WORKLOADS,
    now: datetime | None = None,
) -> DevPki:
    """Write a complete dev PKI into `out_dir` (see certs/README.md for the layout).

    Refuses (FileExistsError) when `out_dir` exists and is not empty, unless `force`.
    """
    # Imported at call time: pki re-exports this module's names, so a module-level import
    # here would make whichever of the two is imported first see the other half-built.
    from .pki import BACKDATE, DevCA

    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a directory")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise FileExistsError(
            f"{root} exists and is not empty; refusing to overwrite (use --force / force=True)"
        )
    for sub in ("workloads", "issuers"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ca = DevCA.create(now=now)
    ca_cert, ca_key = ca.write(root, "ca")
    at = (now or datetime.now(UTC)) - BACKDATE
    server_cert, server_key = ca.issue_server(not_before=at).write(root, "server")
    paths: dict[str, tuple[Path, Path]] = {}
    ids: dict[str, str] = {}
    for entry in workloads:
        name, spiffe_id = workload_spiffe_id(trust_domain, entry)
        if name in paths:
            raise ValueError(f"duplicate workload name {name!r}")
        ids[name] = spiffe_id
        paths[name] = ca.issue_workload(spiffe_id, not_before=at).write(root / "workloads", name)
    user_key, user_jwks = _write_issuer(root / "issuers", "user", USER_KID)
    device_key, device_jwks = _write_issuer(root / "issuers", "device", DEVICE_KID)
    audit_dir = _write_audit_keys(root / "audit", overwrite=force)
    written = sorted(p for p in root.rglob("*") if p.is_file())
    return DevPki(
        root=root,
        trust_domain=trust_domain,
        ca_cert=ca_cert,
        ca_key=ca_key,
        server_cert=server_cert,
        server_key=server_key,
        workloads=MappingProxyType(paths),
        spiffe_ids=MappingProxyType(ids),
        user_key=user_key,
        user_jwks=user_jwks,
        device_key=device_key,
        device_jwks=device_jwks,
        audit_dir=audit_dir,
        written=tuple(written),
    )


def _write_audit_keys(directory: Path, *, overwrite: bool) -> Path:
    # The audit package owns its key format (and sits below devtools in the layers).
    generate_keypair(directory, overwrite=overwrite)
    return directory
