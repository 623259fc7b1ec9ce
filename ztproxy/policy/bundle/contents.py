"""A bundle's bytes -> checked contents the loader can compile.

Takes the bytes, the verification keys and the limits; returns `Contents`: the
manifest, the loader `Source`s (Rego modules, data files at their data paths) and
`policy_revision`. Raises `BundleRefused` on the first problem, in this order:
archive (`archive`), manifest and roots overlap (`manifest`), signature and every file
digest (`signing`), data files that do not parse or lie outside the roots. Pure
Python, no regorus: runs in a worker thread. What remains for the loop thread is the
loader's compile and load-time checks, and `check_packages` (a module's package must
lie under a root, read from the compiled engine's package list).

Data paths as OPA's bundle reader gives them (bundle.go `getNormalizedPath`): a
`data.json` / `data.yaml` / `data.yml` is merged at the path of its directory
(`a/b/data.json` is `data.a.b`). Other files are ignored, as OPA ignores them (they
must still be signed). `*_test.rego` modules are verified and then left out, as the
local loader leaves them out when serving.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..loader import LoadError, Source, parse_data
from .archive import Archive, Limits, read_archive
from .manifest import Manifest, parse_manifest, root_contains
from .refusal import (
    DATA,
    MEMBER_NAME,
    OUTSIDE_ROOTS,
    UNKNOWN_KEY,
    UNSIGNED,
    UNSUPPORTED,
    BundleRefused,
)
from .signing import SIGNATURES_FILE, VerificationKey, verify_files, verify_signature

MANIFEST_FILE = ".manifest"
DEFAULT_LIMITS = Limits()
DATA_FILES = frozenset({"data.json", "data.yaml", "data.yml"})


@dataclass(frozen=True, slots=True)
class Contents:
    manifest: Manifest
    sources: tuple[Source, ...]
    sha256: str
    signed: bool

    @property
    def policy_revision(self) -> str:
        """What audit records, /readyz and the metric carry: `<revision>@sha256:<hex>`."""
        return policy_revision(self.manifest.revision, self.sha256)


def policy_revision(revision: str, sha256: str) -> str:
    return f"{revision}@sha256:{sha256}"


def open_bundle(
    raw: bytes,
    keys: Mapping[str, VerificationKey],
    *,
    limits: Limits = DEFAULT_LIMITS,
    allow_unsigned: bool = False,
    now: Callable[[], float] = time.time,
) -> Contents:
    archive = read_archive(raw, limits)
    manifest = parse_manifest(archive.get(MANIFEST_FILE))
    signed = _verify(archive, keys, allow_unsigned, now)
    sources = tuple(_sources(archive, manifest))
    if not any(s.is_rego for s in sources):
        raise BundleRefused(DATA, "the bundle holds no Rego module")
    return Contents(manifest, sources, archive.sha256, signed)


def _verify(
    archive: Archive,
    keys: Mapping[str, VerificationKey],
    allow_unsigned: bool,
    now: Callable[[], float],
) -> bool:
    raw = archive.get(SIGNATURES_FILE)
    if raw is None:
        if allow_unsigned:
            return False
        raise BundleRefused(UNSIGNED, "the bundle has no .signatures.json")
    if not keys:
        raise BundleRefused(UNKNOWN_KEY, "the bundle is signed but no key is configured")
    verify_files(archive.files, verify_signature(raw, keys, now=now))
    return True


def _sources(archive: Archive, manifest: Manifest) -> Iterable[Source]:
    for name, content in archive.files:
        if name != SIGNATURES_FILE and name.endswith("signatures.json"):
            # OPA's reader takes any member ending so as the signatures file
            # (bundle.go preProcessBundle): refused rather than read differently
            raise BundleRefused(MEMBER_NAME, f"{name[:80]!r} would be OPA's signatures file")
        parts = name.split("/")
        base, dirs = parts[-1], tuple(parts[:-1])
        if name.endswith(".rego"):
            if not base.endswith("_test.rego"):
                yield Source(0, name, "/" + name, dirs, content)
        elif base in DATA_FILES:
            if dirs and dirs[0].startswith("."):
                # OPA trims leading dots off the directory ("/.a/data.json" is data.a)
                raise BundleRefused(MEMBER_NAME, f"data file {name[:80]!r} under a dot directory")
            try:
                value = parse_data("/" + name, content)
            except LoadError as exc:
                raise BundleRefused(DATA, str(exc)) from None
            within_roots(manifest.roots, dirs, value, name)
            yield Source(0, name, "/" + name, dirs, content)
        elif base in ("policy.wasm", "plan.json") or name == "patch.json":
            raise BundleRefused(UNSUPPORTED, f"{name[:80]!r} (wasm, plan and delta bundles)")


def within_roots(roots: tuple[str, ...], path: tuple[str, ...], value: Any, name: str) -> None:
    """OPA's data check (bundle.go validateAndInjectDefaults): every value lies under a
    root, an object on the way to a root is walked into, anything else refuses."""
    if any(root_contains(r, path) for r in roots):
        return
    below = any(
        len(r.split("/")) > len(path) and tuple(r.split("/")[: len(path)]) == path for r in roots
    )
    if isinstance(value, dict) and below:
        for key, item in value.items():
            within_roots(roots, (*path, key), item, name)
        return
    shown = "/" + "/".join(path)
    raise BundleRefused(
        OUTSIDE_ROOTS, f"{name[:80]!r} writes data at {shown[:80]!r}, outside the roots"
    )


def check_packages(manifest: Manifest, packages: Iterable[str]) -> None:
    """Every module's package under a root (`data.a.b` is the path a/b)."""
    for package in packages:
        path = tuple(package.split(".")[1:])
        if not any(root_contains(r, path) for r in manifest.roots):
            raise BundleRefused(OUTSIDE_ROOTS, f"package {package[:80]} is outside the roots")
