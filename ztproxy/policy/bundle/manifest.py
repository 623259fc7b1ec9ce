"""`.manifest`: what OPA's bundle/bundle.go `Manifest` holds, and the roots rule.

Takes the `.manifest` bytes (or None when the bundle has none); returns a `Manifest`.
Fields as OPA reads them (unknown keys are ignored, as Go's decoder does):
`revision` (string, default ""), `roots` (list of strings, default `[""]`: the whole
data tree), `metadata` (object), `rego_version` (0 or 1), `file_rego_versions`
(glob -> 0 or 1), `wasm` (resolvers). Roots are trimmed of "/" and may not overlap
(`RootPathsOverlap`); a path lies under a root when the root's "/" segments are a
prefix of its segments, and the root "" holds everything (`rootContains`).

The embedded engine reads Rego v1 only: a bundle that asks for v0 anywhere, or
carries wasm resolvers, is refused as `unsupported` rather than read differently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .refusal import MANIFEST, ROOTS_OVERLAP, UNSUPPORTED, BundleRefused


@dataclass(frozen=True, slots=True)
class Manifest:
    revision: str = ""
    roots: tuple[str, ...] = ("",)
    metadata: dict[str, Any] | None = None
    rego_version: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The document `opa build` writes (bundle.go's json.Marshal of Manifest)."""
        out: dict[str, Any] = {"revision": self.revision, "roots": list(self.roots)}
        if self.rego_version is not None:
            out["rego_version"] = self.rego_version
        if self.metadata:
            out["metadata"] = self.metadata
        return out


def segments(path: str) -> tuple[str, ...]:
    return tuple(path.split("/"))


def root_contains(root: str, path: tuple[str, ...]) -> bool:
    r = segments(root)
    if r == ("",):
        return True
    return len(r) <= len(path) and path[: len(r)] == r


def roots_overlap(a: str, b: str) -> bool:
    return root_contains(a, segments(b)) or root_contains(b, segments(a))


def parse_manifest(raw: bytes | None) -> Manifest:
    if raw is None:
        return Manifest()
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise BundleRefused(MANIFEST, ".manifest is not JSON") from None
    if not isinstance(doc, dict):
        raise BundleRefused(MANIFEST, ".manifest is not a JSON object")
    revision = doc.get("revision", "")
    if not isinstance(revision, str):
        raise BundleRefused(MANIFEST, ".manifest revision is not a string")
    roots_raw = doc.get("roots")
    if roots_raw is None:
        roots: tuple[str, ...] = ("",)
    elif isinstance(roots_raw, list) and all(isinstance(r, str) for r in roots_raw):
        roots = tuple(r.strip("/") for r in roots_raw)
    else:
        raise BundleRefused(MANIFEST, ".manifest roots is not a list of strings")
    for i, a in enumerate(roots):
        for b in roots[i + 1 :]:
            if roots_overlap(a, b):
                raise BundleRefused(ROOTS_OVERLAP, f"manifest roots {a!r} and {b!r} overlap")
    metadata = doc.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise BundleRefused(MANIFEST, ".manifest metadata is not an object")
    version = doc.get("rego_version")
    if version is not None and (isinstance(version, bool) or version not in (0, 1)):
        raise BundleRefused(MANIFEST, ".manifest rego_version is not 0 or 1")
    per_file = doc.get("file_rego_versions") or {}
    if not isinstance(per_file, dict):
        raise BundleRefused(MANIFEST, ".manifest file_rego_versions is not an object")
    if version == 0 or any(v != 1 for v in per_file.values()):
        raise BundleRefused(UNSUPPORTED, "Rego v0 modules (the embedded engine reads v1)")
    if doc.get("wasm"):
        raise BundleRefused(UNSUPPORTED, "wasm modules (the embedded engine reads Rego)")
    return Manifest(revision, roots, metadata, version)
