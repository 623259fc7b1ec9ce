"""What `verify` found, as values, and how it is shown to people and machines.

Takes findings from verify.py; returns text (one line per segment, then a summary)
or a JSON-able dict. The kinds of damage are a closed set (`Kind`); two of them are
not tampering: a torn tail (a record cut short by a crash, never signed, the chain
continued after it) is reported but does not fail verification, and an unsigned
tail (records after the last signed checkpoint) makes the result "incomplete".

Exit codes, one meaning each (docs/auditors.md says what each proves):
    0  VALID: every record verified and covered by a checkpoint a given key signed
    1  INVALID: damage found (or nothing to verify)
    3  INCOMPLETE: no damage; records after the last verified checkpoint (a running
       log's unsigned tail), and at least one verified checkpoint per chain
    4  UNSIGNED: no damage found, but some chain has no checkpoint signed by a given
       key at all: nothing in it is proven (a deleted checkpoints file, a fabricated log)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Kind(enum.StrEnum):
    MODIFIED = "modified"
    REMOVED = "removed"
    INSERTED = "inserted"
    REORDERED = "reordered"
    TRUNCATED = "truncated"
    FORKED = "forked"
    UNKNOWN_KEY = "unknown key"
    BAD_SIGNATURE = "bad signature"
    STALE_CHECKPOINT = "stale checkpoint"
    UNSIGNED_TAIL = "unsigned tail"
    NO_CHECKPOINT = "no signed checkpoint"
    TORN_TAIL = "torn tail"

    @property
    def is_tampering(self) -> bool:
        return self not in (Kind.UNSIGNED_TAIL, Kind.NO_CHECKPOINT, Kind.TORN_TAIL)


EXIT_VALID, EXIT_INVALID, EXIT_INCOMPLETE, EXIT_UNSIGNED = 0, 1, 3, 4


@dataclass(frozen=True, slots=True)
class Finding:
    kind: Kind
    seq: int | None
    segment: str | None
    detail: str

    def headline(self) -> str:
        where = f" at seq {self.seq}" if self.seq is not None else ""
        label = f"INVALID: {self.kind}" if self.kind.is_tampering else self.kind.upper()
        return f"{label}{where}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "seq": self.seq,
            "segment": self.segment,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class SegmentReport:
    name: str
    first_seq: int | None
    last_seq: int | None
    records: int
    status: str  # "valid" | "invalid" | "unsigned" | "unverified"
    finding: Finding | None = None
    torn: Finding | None = None

    def line(self) -> str:
        span = (
            f"seq {self.first_seq}-{self.last_seq} ({self.records} records)"
            if self.records
            else "no records"
        )
        if self.status == "valid":
            text = f"valid  {span}"
        elif self.status == "unverified":
            text = f"unverified  {span} (follows the damage reported above)"
        else:
            assert self.finding is not None
            text = f"{self.finding.headline()}  ({self.finding.detail})"
        if self.torn is not None:
            text += f"; {self.torn.headline().lower()} ({self.torn.detail})"
        return f"{self.name}  {text}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "records": self.records,
            "status": self.status,
            "finding": self.finding.to_dict() if self.finding else None,
            "torn_tail": self.torn.to_dict() if self.torn else None,
        }


@dataclass(frozen=True, slots=True)
class ChainReport:
    worker: int
    origin: str
    records: int
    signed: int  # records covered by a verified checkpoint
    checkpoints: int
    keys: tuple[str, ...]  # key names that signed verified checkpoints
    segments: tuple[SegmentReport, ...]
    findings: tuple[Finding, ...]

    @property
    def first_tampering(self) -> Finding | None:
        bad = [f for f in self.findings if f.kind.is_tampering]
        return min(bad, key=lambda f: -1 if f.seq is None else f.seq) if bad else None

    @property
    def status(self) -> str:
        if self.first_tampering is not None:
            return "invalid"
        if any(f.kind is Kind.NO_CHECKPOINT for f in self.findings):
            return "unsigned"
        if any(f.kind is Kind.UNSIGNED_TAIL for f in self.findings):
            return "incomplete"
        return "valid"

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "origin": self.origin,
            "status": self.status,
            "records": self.records,
            "signed": self.signed,
            "checkpoints": self.checkpoints,
            "keys": list(self.keys),
            "segments": [s.to_dict() for s in self.segments],
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass(frozen=True, slots=True)
class Report:
    directory: str
    chains: tuple[ChainReport, ...]
    problems: tuple[str, ...] = field(default=())

    @property
    def status(self) -> str:
        if self.problems or not self.chains:
            return "invalid"
        statuses = {c.status for c in self.chains}
        for status in ("invalid", "unsigned", "incomplete"):
            if status in statuses:
                return status
        return "valid"

    @property
    def valid(self) -> bool:
        return self.status == "valid"

    @property
    def exit_code(self) -> int:
        return {"valid": EXIT_VALID, "incomplete": EXIT_INCOMPLETE, "unsigned": EXIT_UNSIGNED}.get(
            self.status, EXIT_INVALID
        )

    def summary(self) -> str:
        records = sum(c.records for c in self.chains)
        segments = sum(len(c.segments) for c in self.chains)
        head = (
            f"{self.status.upper()}: {len(self.chains)} chain(s), {segments} segment(s), "
            f"{records} record(s)"
        )
        notes = [
            f"w{c.worker}: {f.headline()}"
            for c in self.chains
            if (f := c.first_tampering) is not None
        ]
        if self.status != "invalid":  # damage first; an unsigned tail then says nothing
            notes += [
                f"w{c.worker}: {f.headline()}"
                for c in self.chains
                for f in c.findings
                if f.kind in (Kind.UNSIGNED_TAIL, Kind.NO_CHECKPOINT)
            ]
        notes += list(self.problems)
        return head + (f"; {'; '.join(notes)}" if notes else "")

    def to_text(self) -> str:
        lines = [seg.line() for c in self.chains for seg in c.segments]
        lines += [
            f"w{c.worker}: {f.headline()} ({f.detail})"
            for c in self.chains
            for f in c.findings
            if f.segment is None
        ]
        lines.append(f"summary: {self.summary()}")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "status": self.status,
            "chains": [c.to_dict() for c in self.chains],
            "problems": list(self.problems),
            "summary": self.summary(),
        }
