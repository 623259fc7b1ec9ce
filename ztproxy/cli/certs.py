"""`ztproxy certs init`: write a dev PKI (CA, server, workload SVIDs, issuer keys, audit keys).

Thin layer over `ztproxy.devtools.pki.init_dev_pki`. Prints the paths it wrote and the SPIFFE
IDs, never key material. Exit 0 on success, 1 when the directory exists and is not empty
(without --force) or cannot be written.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..devtools.pki import init_dev_pki

DEFAULT_OUT = "certs/dev"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "certs", help="dev PKI material", description="Make dev PKI material (dev only)."
    )
    sub = parser.add_subparsers(dest="certs_command", metavar="ACTION", required=True)
    init = sub.add_parser(
        "init",
        help="write a dev CA, server and workload certificates, issuer and audit keys",
        description="Write a dev CA, a server certificate for localhost/127.0.0.1, X.509-SVIDs "
        "for example workloads, user/device issuer keys with JWKS, and an audit "
        "key pair.",
    )
    init.add_argument(
        "--out",
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"output directory (default: {DEFAULT_OUT})",
    )
    init.add_argument(
        "--force", action="store_true", help="overwrite files in a non-empty directory"
    )
    init.add_argument(
        "--trust-domain",
        default="corp.example",
        metavar="TD",
        help="SPIFFE trust domain of the workload IDs (default: corp.example)",
    )
    init.set_defaults(func=run_init)


def run_init(args: argparse.Namespace) -> int:
    try:
        pki = init_dev_pki(args.out, force=args.force, trust_domain=args.trust_domain)
    except FileExistsError:
        # the library's message names its keyword argument; say it in the CLI's words
        print(
            f"ztproxy certs init: {args.out} is not empty; run again with --force to "
            "overwrite the files in it",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        print(f"ztproxy certs init: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
        return 1
    out = sys.stdout
    print(f"dev PKI written to {pki.root} (dev only; private keys are mode 0600)", file=out)
    print(f"  CA             {pki.ca_cert}", file=out)
    print(f"  server         {pki.server_cert} (localhost, 127.0.0.1)", file=out)
    for name, (cert, _key) in pki.workloads.items():
        print(f"  workload       {cert}  {pki.spiffe_ids[name]}", file=out)
    print(f"  user issuer    {pki.user_issuer} kid={pki.user_kid} jwks={pki.user_jwks}", file=out)
    print(
        f"  device issuer  {pki.device_issuer} kid={pki.device_kid} jwks={pki.device_jwks}",
        file=out,
    )
    print(f"  audit keys     {pki.audit_dir}", file=out)
    first = next(iter(pki.workloads.values()), None)
    print("try:", file=out)
    print(f"  ztproxy token mint --kind user --key {pki.user_key} --sub alice", file=out)
    if first is not None:
        print(
            f"  ztproxy token mint --kind device --key {pki.device_key} --sub laptop-1 "
            f"--bind-cert {first[0]} --claim trust_level=3 --claim managed=true",
            file=out,
        )
    return 0
