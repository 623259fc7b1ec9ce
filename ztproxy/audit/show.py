"""Reading the audit log for people: filter records and print them as a table or
as JSON Lines, saying whether what is shown was verified.

Takes the directory, `Filters` and optionally a verify `Report`; yields `Shown`
records in chain order (worker, then seq). A record counts as verified only when
the report covers it: a given key signed a checkpoint that covers its position and
no damage was found before it. Without a report nothing is called verified.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .report import Report
from .segment import discover, read_lines


def parse_time(text: str) -> datetime:
    """RFC 3339 (or a bare date) as an aware datetime; ValueError when it is neither."""
    value = datetime.fromisoformat(text.strip().replace("z", "Z"))
    if value.tzinfo is None:
        raise ValueError("give a time zone, e.g. 2026-11-28T01:00:00Z")
    return value


@dataclass(frozen=True, slots=True)
class Filters:
    since: datetime | None = None
    until: datetime | None = None
    decision: str | None = None
    reason: str | None = None
    user: str | None = None
    source: str | None = None
    service: str | None = None
    request_id: str | None = None
    worker: int | None = None

    def match(self, record: Mapping[str, Any]) -> bool:
        checks = (
            (self.decision, (record.get("decision"),)),
            (self.reason, (record.get("reason"),)),
            (self.user, (record.get("user_subject"),)),
            (
                self.source,
                (
                    record.get("source_spiffe_id"),
                    record.get("source_address"),
                    record.get("source_cert_sha256"),
                ),
            ),
            (self.service, (record.get("destination_service"),)),
            (self.request_id, (record.get("request_id"),)),
        )
        if any(want is not None and want not in values for want, values in checks):
            return False
        if self.since is not None or self.until is not None:
            try:
                when = parse_time(str(record.get("time", "")))
            except ValueError:
                return False
            if (self.since and when < self.since) or (self.until and when > self.until):
                return False
        return True


@dataclass(frozen=True, slots=True)
class Shown:
    worker: int
    position: int
    record: dict[str, Any] | None  # None: the line is not a JSON object
    verified: bool


def _verified_upto(report: Report | None) -> dict[int, int]:
    out: dict[int, int] = {}
    for chain in report.chains if report else ():
        first = chain.first_tampering
        limit = chain.signed
        if first is not None:
            limit = min(limit, first.seq if first.seq is not None else 0)
        out[chain.worker] = limit
    return out


def records(
    directory: str | Path, filters: Filters, report: Report | None = None
) -> Iterator[Shown]:
    upto = _verified_upto(report)
    for worker, chain in discover(Path(directory)).items():
        if filters.worker is not None and worker != filters.worker:
            continue
        position = 0
        for path in chain.segments:
            for line in read_lines(path).lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if not isinstance(record, dict):
                    yield Shown(worker, position, None, False)
                elif filters.match(record):
                    verified = position < upto.get(worker, 0) and record.get("seq") == position
                    yield Shown(worker, position, record, verified)
                position += 1


COLUMNS = (
    ("time", 24),
    ("w:seq", 9),
    ("decision", 8),
    ("status", 6),
    ("reason", 24),
    ("method", 7),
    ("host/path", 40),
    ("source", 40),
    ("user", 24),
    ("service", 14),
    ("verified", 8),
    ("policy reasons", 0),
)


def _status(r: Mapping[str, Any]) -> str:
    """No HTTP status exists for a refused handshake or a recovery: say so, never 0."""
    kind, status = r.get("kind"), r.get("status")
    if kind == "tls_rejected":
        return "tls"
    if kind == "recovery" or status in (None, 0):
        return "-"
    return str(status)


def _reasons(r: Mapping[str, Any]) -> str:
    items = r.get("set_aside") if r.get("kind") == "recovery" else r.get("policy_reasons")
    return "; ".join(str(x) for x in items) if isinstance(items, list) else ""


def _cells(item: Shown) -> list[str]:
    r = item.record or {}
    if item.record is None:
        return ["(unreadable line)", f"{item.worker}:{item.position}"] + [""] * 8 + ["no", ""]
    return [
        str(r.get("time", "")),
        f"{item.worker}:{r.get('seq', '?')}",
        str(r.get("decision") or r.get("kind") or ""),
        _status(r),
        str(r.get("reason", "")),
        str(r.get("method") or ""),
        f"{r.get('host') or ''}{r.get('path') or ''}",
        str(r.get("source_spiffe_id") or r.get("source_address") or ""),
        str(r.get("user_subject") or ""),
        str(r.get("destination_service") or ""),
        "yes" if item.verified else "no",
        _reasons(r),
    ]


def table_row(item: Shown | None) -> str:
    """One table line (the header when `item` is None). Nothing is cut: a cell longer
    than its column (a long SPIFFE ID) widens the line instead; the policy's reasons
    come last. Characters that are not printable are shown as '?'."""
    cells = [name for name, _ in COLUMNS] if item is None else _cells(item)
    out = ["".join(c if c.isprintable() else "?" for c in text) for text in cells]
    return "  ".join(
        cell.ljust(width) for cell, (_, width) in zip(out, COLUMNS, strict=True)
    ).rstrip()


def json_line(item: Shown) -> str:
    body: dict[str, Any] = (
        dict(item.record)
        if item.record is not None
        else {"unreadable": True, "worker": item.worker, "position": item.position}
    )
    body["verified"] = item.verified
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def statement(report: Report | None, shown: int, verified: int) -> str:
    if report is None:
        return f"NOT VERIFIED: {shown} record(s) shown as found on disk; give --key to verify them"
    return f"{verified} of {shown} record(s) shown are verified (log: {report.summary()})"
