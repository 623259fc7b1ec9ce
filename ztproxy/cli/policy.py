"""`ztproxy policy ...`: policy tooling for Rego authors, on the serving evaluator.

`ztproxy policy test [DIR ...] [--data DIR] [--run REGEX] [--format json] [--coverage]`
runs the Rego unit tests (rules named `test_*`) in-process with the loader, load-time
checks and evaluator the embedded engine serves with, prints PASS/FAIL per test like
`opa test -v` (or one JSON document), and exits 1 when a test fails, errors, none is
found, or the files do not load.

`ztproxy policy eval --policies DIR [--data DIR] [--input FILE] QUERY` evaluates one
query like `opa eval` and prints `{"value": ...}` or `{"undefined": true}` (exit 0), or
`{"error": "..."}` (exit 2) for a load or evaluation error. Trusts nothing; reads only
the given paths.

`ztproxy policy build [DIR ...] [--data DIR] [--revision R] [--root R] [--signing-key
PEM --signing-alg ALG --key-id ID] [-o bundle.tar.gz]` writes an OPA bundle of the
files after the server's own load-time checks (see `ztproxy.policy.bundle.build`);
exit 1 when they do not load, 2 for a bad key or argument. The key is read from a file
only (never an argument: it would show in `ps`), and no message carries it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from ztproxy.policy.bundle.build import SigningOptions, build_bundle
from ztproxy.policy.bundle.signing import ASYMMETRIC, HMAC
from ztproxy.policy.evaluate import eval_query
from ztproxy.policy.loader import LoadError
from ztproxy.policy.revision import compute_revision
from ztproxy.policy.testrunner import print_report, report_json, run_tests


def _test(args: argparse.Namespace) -> int:
    if args.run:
        try:
            re.compile(args.run)
        except re.error as exc:
            print(f"error: --run: not a regular expression ({exc})", file=sys.stderr)
            return 2
    report = run_tests(
        args.paths or ["policies"], args.data or (), run=args.run, coverage=args.coverage
    )
    if args.format == "json":
        print(report_json(report))
    else:
        print_report(report, sys.stdout)
    return 0 if report.ok else 1


def _eval(args: argparse.Namespace) -> int:
    text = None
    if args.input:
        try:
            with open(args.input, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            print(json.dumps({"error": f"{args.input}: cannot read ({type(exc).__name__})"}))
            return 2
    out = eval_query(args.policies, args.data or (), text, args.query)
    print(json.dumps(out, ensure_ascii=False))
    return 2 if "error" in out else 0


def _signing(args: argparse.Namespace) -> SigningOptions | None:
    if not args.signing_key:
        return None
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    with open(args.signing_key, "rb") as fh:
        data = fh.read()
    if args.signing_alg in HMAC:
        return SigningOptions(data.strip(), args.signing_alg, args.key_id)
    return SigningOptions(load_pem_private_key(data, password=None), args.signing_alg, args.key_id)


def _build(args: argparse.Namespace) -> int:
    dirs = args.paths or ["policies"]
    try:
        signing = _signing(args)
    except (OSError, ValueError, TypeError) as exc:  # never the key's bytes
        print(
            f"error: --signing-key: cannot read a private key ({type(exc).__name__})",
            file=sys.stderr,
        )
        return 2
    revision = args.revision
    try:
        if revision is None:  # the content digest of what goes in
            from ztproxy.policy.loader import read_sources

            sources = read_sources(dirs, args.data or ())
            revision = compute_revision((s.root, s.rel, s.content) for s in sources)[:16]
        raw = build_bundle(
            dirs,
            args.data or (),
            revision=revision,
            roots=args.root or ("",),
            signing=signing,
            decision_paths=(args.decision_path,),
        )
    except LoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, TypeError) as exc:
        print(f"error: signing failed ({type(exc).__name__})", file=sys.stderr)
        return 2
    with open(args.output, "wb") as fh:
        fh.write(raw)
    signed = f", signed {signing.algorithm}" if signing else ""
    print(f"wrote {args.output}: revision {revision}, {len(raw)} bytes{signed}")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("policy", help="Rego policy tools (unit tests, eval)")
    sub = parser.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    test = sub.add_parser("test", help="run Rego unit tests in-process (no OPA binary)")
    test.add_argument(
        "paths", nargs="*", metavar="DIR", help="policy directories or files (default: policies)"
    )
    test.add_argument(
        "--data",
        action="append",
        metavar="DIR",
        help="extra data directory (repeatable), as policy.data_dirs",
    )
    test.add_argument("--run", metavar="REGEX", help="only tests whose full name matches")
    test.add_argument("--format", choices=("pretty", "json"), default="pretty")
    test.add_argument(
        "--coverage", action="store_true", help="report the lines evaluated, per file"
    )
    test.set_defaults(func=_test)
    ev = sub.add_parser("eval", help="evaluate a query in-process, like opa eval")
    ev.add_argument(
        "--policies",
        action="append",
        required=True,
        metavar="DIR",
        help="policy directory (repeatable), as policy.policy_dirs",
    )
    ev.add_argument(
        "--data",
        action="append",
        metavar="DIR",
        help="data directory (repeatable), as policy.data_dirs",
    )
    ev.add_argument("--input", metavar="FILE", help="the input document (JSON)")
    ev.add_argument("query", help="a Rego query, e.g. data.ztproxy.authz.decision")
    ev.set_defaults(func=_eval)
    bd = sub.add_parser("build", help="write an OPA bundle (.tar.gz), optionally signed")
    bd.add_argument(
        "paths", nargs="*", metavar="DIR", help="policy directories (default: policies)"
    )
    bd.add_argument("--data", action="append", metavar="DIR", help="data directory (repeatable)")
    bd.add_argument("--revision", help="manifest revision (default: the content digest)")
    bd.add_argument(
        "--root", action="append", metavar="PATH", help="manifest root (repeatable; default: all)"
    )
    bd.add_argument(
        "--decision-path",
        default="ztproxy/authz/decision",
        help="a rule the bundle must define (checked as at server start)",
    )
    bd.add_argument("--signing-key", metavar="FILE", help="PEM private key (or HMAC secret file)")
    bd.add_argument(
        "--signing-alg", default="RS256", choices=sorted(ASYMMETRIC | HMAC), help="JWS algorithm"
    )
    bd.add_argument("--key-id", metavar="ID", help="the key id verifiers look the key up by")
    bd.add_argument("-o", "--output", default="bundle.tar.gz", metavar="FILE")
    bd.set_defaults(func=_build)
    parser.set_defaults(func=lambda _args: (parser.print_help(sys.stderr), 2)[1])
