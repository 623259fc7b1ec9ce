"""Policy revision: SHA-256 over the files the engine loaded (Rego and data).

Takes (root index, relative path, bytes) triples; returns lowercase hex. Each part is
length-prefixed so that no two different file sets share a digest by concatenation,
and the order is fixed (sorted) so the same files always give the same revision. The
revision is reported in readiness, logs, every audit record, and keys the cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def compute_revision(files: Iterable[tuple[int, str, bytes]]) -> str:
    h = hashlib.sha256(b"ztproxy-policy-revision-v1\n")
    for root, rel, content in sorted(files, key=lambda f: (f[0], f[1])):
        name = f"{root}:{rel}".encode()
        for part in (name, content):
            h.update(len(part).to_bytes(8, "big"))
            h.update(part)
    return h.hexdigest()
