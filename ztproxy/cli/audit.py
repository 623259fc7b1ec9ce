"""`ztproxy audit ...`: the auditor's commands, a thin layer over ztproxy.audit.

    keygen --out DIR                     Ed25519 key pair (private key mode 0600)
    verify DIR --key PUB [--key PUB ...] [--trusted-checkpoint FILE] [--json]
    show DIR [--key PUB ...] [filters] [--json]
    checkpoint DIR --key PUB [--worker N]           the largest signed checkpoint, to keep
    proof DIR --seq N [--worker N] [--key PUB ...]   inclusion proof (JSON)
    proof DIR --consistency --trusted-checkpoint FILE [--key PUB ...]
    verify-proof FILE --key PUB [--key PUB ...]

Exit status: 0 valid; 1 invalid or failed; 2 usage; 3 (verify) no damage found but
records after the last signed checkpoint (an unsigned tail); 4 (verify) no damage
found but some chain has no checkpoint signed by a given key at all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..audit import keys as audit_keys
from ..audit import proof as audit_proof
from ..audit import show as audit_show
from ..audit.note import NoteError, SignedCheckpoint, parse_signed_checkpoint
from ..audit.verify import verify_directory


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _keys(paths: list[str] | None) -> tuple[audit_keys.PublicKey, ...]:
    """The keys given, each once (Go's verifier list calls a key given twice ambiguous)."""
    return tuple(dict.fromkeys(audit_keys.load_public_key(p) for p in paths or ()))


def read_checkpoint_file(path: str) -> SignedCheckpoint:
    """A signed checkpoint kept by an auditor: the note text, or one line of a
    w<N>-checkpoints.jsonl file."""
    text = Path(path).read_text(encoding="utf-8")
    if text.lstrip().startswith("{"):
        text = json.loads(text)["note"]
    return parse_signed_checkpoint(text)


def cmd_keygen(args: argparse.Namespace) -> int:
    try:
        private, public = audit_keys.generate_keypair(args.out, overwrite=args.force)
    except FileExistsError:
        return _fail(f"{args.out}: a private key is already there (--force replaces it)")
    key = audit_keys.load_public_key(public)
    print(f"private key: {private} (mode 0600; give it to the proxy as audit.signing_key)")
    print(f"public key:  {public} (give it to auditors: ztproxy audit verify --key)")
    print(f"key id:      {key.name} ({key.key_id})")
    print(f"vkey:        {key.vkey}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    trusted = read_checkpoint_file(args.trusted_checkpoint) if args.trusted_checkpoint else None
    report = verify_directory(args.dir, _keys(args.key), trusted_checkpoint=trusted)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        sys.stdout.write(report.to_text())
    return report.exit_code


def cmd_show(args: argparse.Namespace) -> int:
    filters = audit_show.Filters(
        since=args.since,
        until=args.until,
        decision=args.decision,
        reason=args.reason,
        user=args.user,
        source=args.source,
        service=args.service,
        request_id=args.request_id,
        worker=args.worker,
    )
    report = verify_directory(args.dir, _keys(args.key)) if args.key else None
    shown = verified = 0
    out = sys.stdout
    if not args.json:
        out.write(audit_show.table_row(None) + "\n")
    for item in audit_show.records(args.dir, filters, report):
        if args.limit is not None and shown >= args.limit:
            break
        shown += 1
        verified += item.verified
        out.write((audit_show.json_line(item) if args.json else audit_show.table_row(item)) + "\n")
    print(
        audit_show.statement(report, shown, verified), file=sys.stderr if args.json else sys.stdout
    )
    return 0


def _emit(obj: Any, out: str | None) -> None:
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    if out:
        Path(out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


def cmd_checkpoint(args: argparse.Namespace) -> int:
    signed = audit_proof.latest_checkpoint(args.dir, args.worker, _keys(args.key))
    if signed is None:
        return _fail(f"no signed checkpoint for chain w{args.worker} in {args.dir}")
    if args.out:
        Path(args.out).write_text(signed.raw, encoding="utf-8")
    else:
        sys.stdout.write(signed.raw)
    return 0


def cmd_proof(args: argparse.Namespace) -> int:
    keys = _keys(args.key)
    if args.consistency:
        if not args.trusted_checkpoint:
            return _fail("--consistency needs --trusted-checkpoint FILE")
        old = read_checkpoint_file(args.trusted_checkpoint)
        bundle = audit_proof.build_consistency(args.dir, old, keys=keys)
    elif args.seq is None:
        return _fail("give --seq N (inclusion proof) or --consistency")
    else:
        bundle = audit_proof.build_inclusion(args.dir, args.seq, worker=args.worker, keys=keys)
    _emit(bundle, args.out)
    return 0


def cmd_verify_proof(args: argparse.Namespace) -> int:
    bundle = json.loads(Path(args.proof).read_text(encoding="utf-8"))
    try:
        proven = audit_proof.verify_bundle(bundle, _keys(args.key))
    except audit_proof.ProofError as exc:
        print(f"INVALID: {exc}")
        return 1
    print(f"valid: {proven}")
    return 0


def _reader_gone() -> int:
    """stdout's reader went away (`... | head`): stop quietly, as a pipe's writer should.
    stdout is pointed at /dev/null so the interpreter's last flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 0


def _guarded(func: Any) -> Any:
    """Turn the errors an auditor can cause (bad paths, bad files) into exit 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            code = int(func(args))
            sys.stdout.flush()
            return code
        except BrokenPipeError:
            return _reader_gone()
        except (OSError, ValueError, KeyError, NoteError) as exc:
            return _fail(str(exc))

    return run


def _time(text: str) -> Any:
    try:
        return audit_show.parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text} ({exc})") from None


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("audit", help="read, verify and prove the audit log")
    sub = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    key_help = "public key (PEM, or a file holding one signed-note vkey); repeat for rotated keys"

    p = sub.add_parser("keygen", help="write an Ed25519 signing key pair")
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="directory for audit-private.pem (mode 0600) and audit-public.pem",
    )
    p.add_argument("--force", action="store_true", help="replace an existing key")
    p.set_defaults(func=_guarded(cmd_keygen))

    p = sub.add_parser(
        "verify",
        help="prove offline that the log is whole",
        description="Exit status: 0 valid and fully signed; 1 INVALID; 3 valid but records "
        "after the last verified checkpoint (unsigned tail); 4 no damage found "
        "but a chain has no checkpoint signed by a given key (nothing proven).",
    )
    p.add_argument("dir", metavar="DIR", help="the audit directory")
    p.add_argument("--key", action="append", required=True, metavar="PUB", help=key_help)
    p.add_argument(
        "--trusted-checkpoint",
        metavar="FILE",
        help="a checkpoint kept earlier: detects rollback below it",
    )
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.set_defaults(func=_guarded(cmd_verify))

    p = sub.add_parser("show", help="list records, filtered")
    p.add_argument("dir", metavar="DIR", help="the audit directory")
    p.add_argument(
        "--key",
        action="append",
        metavar="PUB",
        help=f"verify before showing (marks records verified); {key_help}",
    )
    p.add_argument("--since", type=_time, metavar="TIME", help="records at or after (RFC 3339)")
    p.add_argument("--until", type=_time, metavar="TIME", help="records at or before (RFC 3339)")
    p.add_argument("--decision", choices=("allow", "deny"), help="only this decision")
    p.add_argument("--reason", help="only this reason code (e.g. policy_denied)")
    p.add_argument("--user", help="only this user subject")
    p.add_argument("--source", help="only this SPIFFE ID, source address or cert SHA-256")
    p.add_argument("--service", help="only this destination service")
    p.add_argument("--request-id", help="only this request id")
    p.add_argument("--worker", type=int, help="only this worker's chain")
    p.add_argument("--limit", type=int, help="show at most this many records")
    p.add_argument("--json", action="store_true", help="JSON Lines")
    p.set_defaults(func=_guarded(cmd_show))

    p = sub.add_parser(
        "checkpoint", help="print the largest signed checkpoint, to keep (see docs/auditors.md)"
    )
    p.add_argument("dir", metavar="DIR", help="the audit directory")
    p.add_argument("--worker", type=int, default=0, help="the worker's chain (default 0)")
    p.add_argument(
        "--key",
        action="append",
        required=True,
        metavar="PUB",
        help=f"only checkpoints this key signed; {key_help}",
    )
    p.add_argument("--out", metavar="FILE", help="write it here instead of stdout")
    p.set_defaults(func=_guarded(cmd_checkpoint))

    p = sub.add_parser("proof", help="inclusion proof of one record (or consistency)")
    p.add_argument("dir", metavar="DIR", help="the audit directory")
    p.add_argument("--seq", type=int, help="the record to prove (inclusion proof)")
    p.add_argument("--worker", type=int, default=0, help="the worker's chain (default 0)")
    p.add_argument(
        "--consistency",
        action="store_true",
        help="prove the log extends --trusted-checkpoint instead",
    )
    p.add_argument(
        "--trusted-checkpoint", metavar="FILE", help="the older checkpoint for --consistency"
    )
    p.add_argument(
        "--key",
        action="append",
        metavar="PUB",
        help=f"only use checkpoints this key signed; {key_help}",
    )
    p.add_argument("--out", metavar="FILE", help="write the proof here instead of stdout")
    p.set_defaults(func=_guarded(cmd_proof))

    p = sub.add_parser("verify-proof", help="check a proof with only the public key")
    p.add_argument("proof", metavar="FILE", help="a proof made by `audit proof`")
    p.add_argument("--key", action="append", required=True, metavar="PUB", help=key_help)
    p.set_defaults(func=_guarded(cmd_verify_proof))
