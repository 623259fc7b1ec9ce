"""Proofs an auditor can hand to a third party without handing over the log.

Inclusion: one record, its RFC 6962 audit path, and a signed checkpoint covering it.
Consistency: two signed checkpoints of one chain and the RFC 6962 consistency proof
that the later log extends the earlier one (what a transparency-log monitor checks).

Building takes the audit directory (and optionally keys, to pick only checkpoints
they verify); verifying takes only the bundle and the public keys, and trusts
nothing in the bundle: the record is re-hashed, the signature and the path checked.
Bundles are JSON objects with a "type" of ztproxy-inclusion-proof/v1 or
ztproxy-consistency-proof/v1; hashes are base64, as in the checkpoint.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import merkle
from .keys import PublicKey
from .note import NoteError, SignatureCheck, SignedCheckpoint, parse_signed_checkpoint, verify_note
from .record import line_leaf
from .segment import discover, read_lines
from .walk import fast_walk

INCLUSION = "ztproxy-inclusion-proof/v1"
CONSISTENCY = "ztproxy-consistency-proof/v1"


class ProofError(ValueError):
    """The proof cannot be built or does not verify; the message says why."""


def _b64(items: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in items]


def _unb64(items: Any) -> list[bytes]:
    if not isinstance(items, list):
        raise ProofError("proof is not a list")
    try:
        out = [base64.b64decode(h, validate=True) for h in items]
    except (ValueError, TypeError):
        raise ProofError("proof hashes are not base64") from None
    if any(len(h) != 32 for h in out):
        raise ProofError("proof hashes are not SHA-256")
    return out


def _chain(directory: Path, worker: int) -> tuple[list[bytes], list[bytes], int]:
    chains = discover(directory)
    if worker not in chains:
        raise ProofError(f"no chain w{worker} in {directory}")
    lines: list[bytes] = []
    for path in chains[worker].segments:
        lines.extend(read_lines(path).lines)
    leaves, good = fast_walk(lines, None)
    return lines, leaves, good


def _signed_checkpoints(
    directory: Path, worker: int, keys: tuple[PublicKey, ...]
) -> Iterator[SignedCheckpoint]:
    """Checkpoints of the chain, newest first; only those `keys` verify, if given."""
    chain = discover(directory).get(worker)
    if chain is None or chain.checkpoints is None:
        return
    for raw in reversed(read_lines(chain.checkpoints).lines):
        try:
            signed = parse_signed_checkpoint(json.loads(raw)["note"])
        except (ValueError, KeyError, TypeError, NoteError):
            continue
        if signed.checkpoint.worker != worker:
            continue  # another chain's checkpoint placed in this file: never this chain's
        if not keys or verify_note(signed.note, keys)[0] is SignatureCheck.VALID:
            yield signed


def latest_checkpoint(
    directory: str | Path, worker: int = 0, keys: tuple[PublicKey, ...] = ()
) -> SignedCheckpoint | None:
    """The checkpoint to keep: the largest tree size a given key signed (the newest
    of equal sizes). Never the last line as such: a stale checkpoint appended again
    at the end of the file is not the newest."""
    best: SignedCheckpoint | None = None
    for signed in _signed_checkpoints(Path(directory), worker, keys):  # newest first
        if best is None or signed.checkpoint.size > best.checkpoint.size:
            best = signed
    return best


def build_inclusion(
    directory: str | Path, seq: int, *, worker: int = 0, keys: tuple[PublicKey, ...] = ()
) -> dict[str, Any]:
    lines, leaves, good = _chain(Path(directory), worker)
    if not 0 <= seq < len(lines):
        raise ProofError(f"chain w{worker} has no record with seq {seq}")
    for signed in _signed_checkpoints(Path(directory), worker, keys):
        cp = signed.checkpoint
        if seq < cp.size <= good and merkle.root(leaves[: cp.size]) == cp.root:
            return {
                "type": INCLUSION,
                "origin": cp.origin,
                "seq": seq,
                "tree_size": cp.size,
                "record": lines[seq].decode("utf-8"),
                "proof": _b64(merkle.inclusion_proof(leaves[: cp.size], seq)),
                "checkpoint": signed.raw,
            }
    raise ProofError(
        f"no signed checkpoint that matches the log covers seq {seq} (run `ztproxy audit verify`)"
    )


def build_consistency(
    directory: str | Path, old: SignedCheckpoint, *, keys: tuple[PublicKey, ...] = ()
) -> dict[str, Any]:
    worker = old.checkpoint.worker
    if worker is None:
        raise ProofError("the old checkpoint names no worker chain")
    _, leaves, good = _chain(Path(directory), worker)
    for new in _signed_checkpoints(Path(directory), worker, keys):
        size = new.checkpoint.size
        if (
            old.checkpoint.size <= size <= good
            and merkle.root(leaves[:size]) == new.checkpoint.root
        ):
            return {
                "type": CONSISTENCY,
                "old_checkpoint": old.raw,
                "new_checkpoint": new.raw,
                "proof": _b64(merkle.consistency_proof(leaves[:size], old.checkpoint.size)),
            }
    raise ProofError("no signed checkpoint that matches the log extends the old one")


def _open_checkpoint(raw: Any, keys: tuple[PublicKey, ...], label: str) -> SignedCheckpoint:
    if not isinstance(raw, str):
        raise ProofError(f"{label} is missing")
    try:
        signed = parse_signed_checkpoint(raw)
    except NoteError as exc:
        raise ProofError(f"{label}: {exc}") from None
    status, _ = verify_note(signed.note, keys)
    if status is not SignatureCheck.VALID:
        raise ProofError(f"{label}: {status.value}")
    return signed


def verify_bundle(bundle: Any, keys: tuple[PublicKey, ...]) -> str:
    """Check a proof bundle; returns a sentence saying what was proven, or raises
    ProofError saying what failed."""
    if not isinstance(bundle, dict):
        raise ProofError("not a proof bundle")
    if bundle.get("type") == INCLUSION:
        return _verify_inclusion(bundle, keys)
    if bundle.get("type") == CONSISTENCY:
        return _verify_consistency(bundle, keys)
    raise ProofError("unknown proof type")


def _verify_inclusion(bundle: dict[str, Any], keys: tuple[PublicKey, ...]) -> str:
    cp = _open_checkpoint(bundle.get("checkpoint"), keys, "checkpoint").checkpoint
    record = bundle.get("record")
    if not isinstance(record, str):
        raise ProofError("record is missing")
    parsed = line_leaf(record.encode("utf-8"))
    try:
        fields = json.loads(record)
    except ValueError:
        raise ProofError("record is not JSON") from None
    if parsed is None or parsed[0].decode() != parsed[1].hex():
        raise ProofError("record does not match its hash")
    seq = fields.get("seq") if isinstance(fields, dict) else None
    if type(seq) is not int or seq != bundle.get("seq"):
        raise ProofError("record seq does not match the proof")
    if not merkle.verify_inclusion(parsed[1], seq, cp.size, _unb64(bundle.get("proof")), cp.root):
        raise ProofError(f"record seq {seq} is not in the tree of size {cp.size}")
    return f"record seq {seq} is in {cp.origin} at tree size {cp.size} (signed {cp.time})"


def _verify_consistency(bundle: dict[str, Any], keys: tuple[PublicKey, ...]) -> str:
    old = _open_checkpoint(bundle.get("old_checkpoint"), keys, "old checkpoint").checkpoint
    new = _open_checkpoint(bundle.get("new_checkpoint"), keys, "new checkpoint").checkpoint
    if (old.origin, old.genesis) != (new.origin, new.genesis):
        raise ProofError("the checkpoints belong to different logs")
    proof = _unb64(bundle.get("proof"))
    empty = old.size == 0 and not proof and old.root == merkle.root([])
    if not empty and not merkle.verify_consistency(old.size, new.size, old.root, new.root, proof):
        raise ProofError(f"the log at size {new.size} does not extend the one at size {old.size}")
    return f"{new.origin} at size {new.size} ({new.time}) extends size {old.size} ({old.time})"
