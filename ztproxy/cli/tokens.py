"""`ztproxy token mint`: dev user and device tokens, device tokens bound to a client cert.

Thin layer over `ztproxy.devtools.mint.mint_token`. Issuer, audience and kid default to the
dev issuers written by `ztproxy certs init`. Prints the token on stdout and nothing else;
errors go to stderr without key material. Exit 0, 1 on a bad key/cert/claim, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

from cryptography import x509

from ..devtools.mint import alg_for_key, load_private_key, mint_token
from ..devtools.pki import AUDIENCE, DEVICE_ISSUER, DEVICE_KID, USER_ISSUER, USER_KID

DEFAULTS = {"user": (USER_ISSUER, USER_KID), "device": (DEVICE_ISSUER, DEVICE_KID)}
_TTL = re.compile(r"([0-9]{1,9})([smhd]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_TTL = 366 * 86400


def parse_ttl(text: str) -> int:
    """'30s', '10m', '2h', '1d' or plain seconds -> seconds (1 s .. 366 d)."""
    match = _TTL.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"bad TTL {text!r}: use 30s, 10m, 2h, 1d or seconds")
    seconds = int(match.group(1)) * _UNIT[match.group(2)]
    if not 0 < seconds <= MAX_TTL:
        raise argparse.ArgumentTypeError(f"TTL {text!r} must be between 1s and 366d")
    return seconds


def _no_constants(name: str) -> Any:
    raise ValueError(name)  # NaN / Infinity are not JSON; keep them as strings


def parse_claim(text: str) -> tuple[str, Any]:
    """'k=v' -> (k, v as JSON when it parses as finite JSON, else the string v)."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"bad claim {text!r}: use name=value")
    try:
        value: Any = json.loads(raw, parse_constant=_no_constants)
    except ValueError:
        return name, raw
    if isinstance(value, float) and not math.isfinite(value):
        return name, raw
    return name, value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "token", help="dev tokens", description="Mint dev tokens (dev only)."
    )
    sub = parser.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    mint = sub.add_parser(
        "mint",
        help="mint a user or device token",
        description="Mint a signed dev JWT and print it on stdout. Issuer, audience and kid "
        "default to the dev issuers of `ztproxy certs init` for the kind.",
    )
    mint.add_argument("--kind", choices=("user", "device"), required=True)
    mint.add_argument("--key", required=True, type=Path, help="PEM private signing key")
    mint.add_argument("--sub", required=True, help="subject (user id, or device id)")
    mint.add_argument("--issuer", help="iss (default: the dev issuer of --kind)")
    mint.add_argument(
        "--audience", action="append", metavar="AUD", help=f"aud, repeatable (default: {AUDIENCE})"
    )
    mint.add_argument("--kid", help="key id (default: user-1 / device-1)")
    mint.add_argument("--alg", help="JWS algorithm (default: from the key, e.g. ES256)")
    mint.add_argument(
        "--claim",
        action="append",
        type=parse_claim,
        default=[],
        metavar="K=V",
        help="extra claim; V parsed as JSON when it parses",
    )
    mint.add_argument(
        "--bind-cert",
        type=Path,
        metavar="CERT",
        help="PEM client certificate to bind (cnf.x5t#S256, RFC 8705)",
    )
    mint.add_argument(
        "--unbound", action="store_true", help="allow a device token without --bind-cert"
    )
    mint.add_argument("--ttl", type=parse_ttl, default=600, help="lifetime (default: 10m)")
    mint.set_defaults(func=run_mint)


def _reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    return (exc.strerror or "cannot be read").lower()


def run_mint(args: argparse.Namespace) -> int:
    if args.kind == "device" and args.bind_cert is None and not args.unbound:
        print(
            "ztproxy token mint: a device token needs --bind-cert CERT (or --unbound)",
            file=sys.stderr,
        )
        return 2
    try:
        key = load_private_key(args.key)
    except OSError as exc:
        print(f"ztproxy token mint: {args.key}: {_reason(exc)}", file=sys.stderr)
        return 1
    except (ValueError, TypeError):
        # The loader's message is not echoed: it could describe key contents.
        print(
            f"ztproxy token mint: cannot load an unencrypted PEM private key from {args.key}",
            file=sys.stderr,
        )
        return 1
    cert = None
    if args.bind_cert is not None:
        try:
            cert = x509.load_pem_x509_certificate(args.bind_cert.read_bytes())
        except OSError as exc:
            print(f"ztproxy token mint: {args.bind_cert}: {_reason(exc)}", file=sys.stderr)
            return 1
        except ValueError:
            print(
                f"ztproxy token mint: cannot load a PEM certificate from {args.bind_cert}",
                file=sys.stderr,
            )
            return 1
    issuer, kid = DEFAULTS[args.kind]
    audience = args.audience or [AUDIENCE]
    try:
        alg = args.alg or alg_for_key(key)
        token = mint_token(
            key=key,
            kid=args.kid or kid,
            issuer=args.issuer or issuer,
            audience=audience[0] if len(audience) == 1 else audience,
            subject=args.sub,
            alg=alg,
            ttl=args.ttl,
            claims=dict(args.claim),
            bind_cert=cert,
        )
    except (ValueError, TypeError, NotImplementedError) as exc:
        print(
            f"ztproxy token mint: cannot sign with this key and algorithm: {type(exc).__name__}",
            file=sys.stderr,
        )
        return 1
    sys.stdout.write(token + "\n")
    return 0
