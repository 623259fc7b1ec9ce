"""Stage 7: the signed, tamper-evident audit log, and the auditor's tools.

Writing: `AuditLog` (log.py) queues events; the writer thread (writer.py, chain.py)
turns them into hash-chained JSON lines (record.py, canonical.py) in rotating
segment files (segment.py), and signs RFC 6962 Merkle checkpoints (merkle.py) as
C2SP signed notes (note.py) with an Ed25519 key (keys.py).

Reading, offline: verify.py (chain, roots, signatures, trusted checkpoint; walk.py
walks the records, fanout.py splits a large chain across processes), show.py
(filtered listing), proof.py (inclusion and consistency proofs). The format is
documented for auditors in docs/auditors.md.
"""

from .log import AuditLog
from .recovery import RecoveryRefused

__all__ = ["AuditLog", "RecoveryRefused"]
