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
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from ztproxy.policy.evaluate import eval_query
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
    parser.set_defaults(func=lambda _args: (parser.print_help(sys.stderr), 2)[1])
