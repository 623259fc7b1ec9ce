"""The one error of the bundle pipeline: a bundle refused, with a stable reason code.

Every check (archive, manifest, signature, roots, load-time policy checks, download)
raises `BundleRefused(reason, detail)`. `reason` is one of the codes below: it is the
log line's `reason` and the metric label, so it is a closed set. `detail` is one line
for operators: member names, key ids, algorithm names; never key material, tokens or
header values.
"""

from __future__ import annotations

# archive
TRUNCATED = "archive_truncated"  # not gzip, cut short, or not a tar
MEMBER_NAME = "member_name"  # traversal, absolute, backslash, control character, duplicate
MEMBER_TYPE = "member_type"  # symlink, hard link, device, fifo, sparse
MEMBER_SIZE = "member_too_large"
ARCHIVE_SIZE = "archive_too_large"  # compressed, expanded total, ratio, member count
# manifest and roots
MANIFEST = "manifest_invalid"
ROOTS_OVERLAP = "roots_overlap"
OUTSIDE_ROOTS = "outside_roots"
UNSUPPORTED = "unsupported"  # wasm, plan, rego_version 0, delta bundles
DATA = "data_invalid"
# signature
UNSIGNED = "signature_missing"
SIGNATURE = "signature_invalid"  # garbage JWT, bad signature, bad payload, scope
UNKNOWN_KEY = "unknown_key"
ALGORITHM = "algorithm_not_allowed"
EXPIRED = "signature_expired"
FILE_UNSIGNED = "file_not_signed"
FILE_MISSING = "signed_file_missing"
DIGEST = "digest_mismatch"
# after the checks above
POLICY = "policy_refused"  # the loader's compile and load-time checks
DOWNLOAD = "download_failed"
PERSIST = "persist_failed"

REASONS = (
    TRUNCATED,
    MEMBER_NAME,
    MEMBER_TYPE,
    MEMBER_SIZE,
    ARCHIVE_SIZE,
    MANIFEST,
    ROOTS_OVERLAP,
    OUTSIDE_ROOTS,
    UNSUPPORTED,
    DATA,
    UNSIGNED,
    SIGNATURE,
    UNKNOWN_KEY,
    ALGORITHM,
    EXPIRED,
    FILE_UNSIGNED,
    FILE_MISSING,
    DIGEST,
    POLICY,
    DOWNLOAD,
    PERSIST,
)


class BundleRefused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REASONS, reason
        detail = " ".join(detail.split())[:300]
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
