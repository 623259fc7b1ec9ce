"""`ztproxy policy ...`: policy tooling for Rego authors.

`ztproxy policy test [DIR ...] [--data DIR]` runs the Rego unit tests (rules named
`test_*`) in-process with the same loader the embedded engine serves with, prints
PASS/FAIL per test like `opa test -v`, and exits 1 when a test fails, errors, none is
found, or the files do not load. Trusts nothing; reads only the given paths.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ztproxy.policy.testrunner import print_report, run_tests


def _test(args: argparse.Namespace) -> int:
    report = run_tests(args.paths or ["policies"], args.data or ())
    print_report(report, sys.stdout)
    return 0 if report.ok else 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("policy", help="Rego policy tools (unit tests)")
    sub = parser.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    test = sub.add_parser("test", help="run Rego unit tests in-process (no OPA binary)")
    test.add_argument("paths", nargs="*", metavar="DIR",
                      help="policy directories or files (default: policies)")
    test.add_argument("--data", action="append", metavar="DIR",
                      help="extra data directory (repeatable), as policy.data_dirs")
    test.set_defaults(func=_test)
    parser.set_defaults(func=lambda _args: (parser.print_help(sys.stderr), 2)[1])
