"""The command line: a thin layer over the library.

Each subcommand lives in its own module with a `register(subparsers)` function that
adds its parser and sets `func`, a callable taking the parsed namespace and returning
the exit status. Every subcommand that reads a config uses `config.load.load_config`,
the same loader the server runs.

`main` is the one outermost handler: an exception that escapes a subcommand is printed
as one line (`ztproxy: error: ...`, naming the file, key or port it is about) with exit
status 1; `ztproxy --debug COMMAND` prints the traceback as well.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from .. import __version__
from ..server.serve import one_line
from .audit import register as register_audit
from .certs import register as register_certs
from .demo import register as register_demo
from .policy import register as register_policy
from .run import register as register_run
from .tokens import register as register_tokens


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ztproxy",
        description="Zero-trust policy enforcement proxy (mTLS, tokens, OPA, signed audit).",
    )
    parser.add_argument("--version", action="version", version=f"ztproxy {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print the traceback of an error, not just its one line",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in (
        register_run,
        register_demo,
        register_certs,
        register_tokens,
        register_policy,
        register_audit,
    ):
        register(sub)
    for child in sub.choices.values():  # `ztproxy run --debug ...` works too
        child.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the one outermost handler: one line
        if args.debug:
            traceback.print_exc()
        print(f"ztproxy: error: {one_line(exc)}", file=sys.stderr)
        return 1
