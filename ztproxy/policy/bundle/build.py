"""`ztproxy policy build`: policy and data directories -> an OPA bundle (.tar.gz bytes).

Takes the directories the embedded engine would load (`policy_dirs`, `data_dirs`), a
revision, roots and optionally a signing key; returns the bundle bytes. The files are
first loaded and checked exactly as the server loads them (`loader.load`: compile,
builtin allowlist, rule/data conflicts), so an unsound bundle is never written.

The layout is the one `opa build` writes (OPA bundle/bundle.go `Writer`): member names
with a leading "/", every module at its path relative to its root, all data merged
into one `/data.json`, `/.manifest` with `revision` and `roots` (and `rego_version`
1), and `/.signatures.json` when signed. `*_test.rego` files are left out, as the
server leaves them out. The archive is deterministic: sorted members, mtime 0, owner
0, gzip without a timestamp, so the same inputs give the same bytes and the same
policy revision.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..loader import LoadError, add_data, compile_sources, read_sources
from .contents import check_packages, within_roots
from .manifest import Manifest, roots_overlap
from .refusal import BundleRefused
from .signing import SIGNATURES_FILE, sign_files


@dataclass(frozen=True, slots=True)
class SigningOptions:
    private_key: Any  # a cryptography private key, or bytes for HMAC
    algorithm: str = "RS256"
    key_id: str | None = None

    def __repr__(self) -> str:
        return f"SigningOptions([secure], {self.algorithm!r}, {self.key_id!r})"


def bundle_files(
    policy_dirs: Sequence[str],
    data_dirs: Sequence[str],
    manifest: Manifest,
    decision_paths: Sequence[str] = (),
) -> list[tuple[str, bytes]]:
    """(name without the leading "/", bytes), sorted. Raises LoadError (the server's
    own load-time checks, run here on this thread)."""
    for i, a in enumerate(manifest.roots):
        for b in manifest.roots[i + 1 :]:
            if roots_overlap(a, b):
                raise LoadError(f"roots {a!r} and {b!r} overlap")
    sources = read_sources(policy_dirs, data_dirs)
    # refuse what the server would: the load-time checks, and modules outside the roots
    packages = compile_sources(sources, decision_paths=decision_paths).packages
    try:
        check_packages(manifest, packages)
    except BundleRefused as exc:
        raise LoadError(exc.detail) from None
    files: dict[str, bytes] = {}
    data: dict[str, Any] = {}
    for src in sources:
        if src.is_rego:
            name = src.rel.replace("\\", "/")
            if name in files:
                raise LoadError(f"{src.path}: two policy roots hold {name}")
            files[name] = src.content
            continue
        add_data(data, src)
    try:
        within_roots(manifest.roots, (), data, "data")
    except BundleRefused as exc:
        raise LoadError(exc.detail) from None
    files["data.json"] = json.dumps(data, sort_keys=True, ensure_ascii=False).encode("utf-8")
    files[".manifest"] = json.dumps(manifest.as_json(), sort_keys=True).encode("utf-8")
    return sorted(files.items())


def write_bundle(files: Sequence[tuple[str, bytes]]) -> bytes:
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in files:
            info = tarfile.TarInfo("/" + name)
            info.size = len(content)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(tar_buf.getvalue(), mtime=0)


def build_bundle(
    policy_dirs: Sequence[str],
    data_dirs: Sequence[str] = (),
    *,
    revision: str,
    roots: Sequence[str] = ("",),
    signing: SigningOptions | None = None,
    decision_paths: Sequence[str] = (),
) -> bytes:
    """The bundle bytes. Raises LoadError (the files do not load or the roots are bad)
    and ValueError (a signing problem; never the key)."""
    manifest = Manifest(revision=revision, roots=tuple(r.strip("/") for r in roots), rego_version=1)
    files = bundle_files(policy_dirs, data_dirs, manifest, decision_paths)
    if signing is not None:
        token = sign_files(files, signing.private_key, signing.algorithm, signing.key_id)
        files = sorted([*files, (SIGNATURES_FILE, token)])
    return write_bundle(files)
