"""Stage 4: builds the policy input document from verified facts only.

Takes the canonical request (`RequestFacts`), the verified workload (`PeerIdentity`)
and the verified user / device (`Credentials`); returns the versioned JSON document
Rego sees as `input` (docs/rego-authors.md describes it field by field). Everything in
it was verified by an earlier stage; nothing comes from a header the client could
forge. Credential headers never appear: the request stage already drops them, and
this stage drops authorization, cookie and proxy-authorization again (defence in
depth). `input_digest` is the hex SHA-256 of the canonical JSON (sorted keys, compact,
UTF-8), recorded in the audit log as `policy_input_sha256`.

The document is returned as a `policy.prepared.PreparedInput` (a read-only dict): its
canonical JSON is encoded once and serves the audit digest, the decision cache key
and the engines alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..model import Credentials, PeerIdentity, Principal, RequestFacts
from ..policy.canonical import sha256_hex
from ..policy.prepared import PreparedInput

INPUT_VERSION = 1
_NEVER_SHOWN = frozenset({"authorization", "cookie", "proxy-authorization"})


def rfc3339_ms(moment: datetime) -> str:
    """UTC, millisecond precision, `Z` suffix: 2026-11-28T01:02:03.456Z. A naive
    datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    elif moment.utcoffset():
        moment = moment.astimezone(UTC)
    # isoformat is C code; strftime was a measurable share of every request.
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


# What a verified peer or token contributes never changes for that peer or token, so
# it is converted once. Bounded; the values are plain read-only data (never mutated:
# the document is handed to engines as JSON).
_MEMO_MAX = 4096
_certificates: dict[PeerIdentity, dict[str, Any]] = {}
_claims: dict[int, tuple[Mapping[str, Any], dict[str, Any], bool]] = {}


def _certificate(peer: PeerIdentity) -> dict[str, Any]:
    cert = _certificates.get(peer)
    if cert is None:
        if len(_certificates) >= _MEMO_MAX:
            _certificates.clear()
        cert = _certificates[peer] = {
            "fingerprint_sha256": peer.fingerprint_sha256,
            "subject": peer.subject,
            "issuer": peer.issuer,
            "not_after": rfc3339_ms(peer.not_after),
            "uri_sans": list(peer.uri_sans),
            "dns_sans": list(peer.dns_sans),
        }
    return cert


def _plain_claims(principal: Principal | None) -> tuple[dict[str, Any] | None, bool]:
    """(the claims as plain JSON values, whether a float is among them)."""
    # Keyed by the claims object itself (the verified-token cache hands out the same
    # one for the same token); the entry keeps it alive, so its id cannot be reused.
    if principal is None:
        return None, False
    source = principal.claims
    entry = _claims.get(id(source))
    if entry is None or entry[0] is not source:
        if len(_claims) >= _MEMO_MAX:
            _claims.clear()
        plain = _plain(source)
        entry = _claims[id(source)] = (source, plain, _has_float(plain))
    return entry[1], entry[2]


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return False


def _plain(value: Any) -> Any:
    """Claims as plain JSON values (dicts and lists), whatever mapping type held them."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def build_policy_input(
    facts: RequestFacts, peer: PeerIdentity, creds: Credentials
) -> PreparedInput:
    user, device = creds.user, creds.device
    user_claims, user_floats = _plain_claims(user)
    device_claims, device_floats = _plain_claims(device)
    # Everything outside the claims is strings, lists, objects and the int version:
    # the claims decide whether the fast encoder may write the document.
    return PreparedInput(
        {
            "version": INPUT_VERSION,
            "request": {
                "id": facts.request_id,
                "method": facts.method,
                "scheme": facts.scheme,
                "host": facts.host,
                "path": facts.path,
                "parsed_path": list(facts.parsed_path),
                "query": {k: list(v) for k, v in facts.query.items()},
                "headers": {
                    k.lower(): list(v)
                    for k, v in facts.headers.items()
                    if k.lower() not in _NEVER_SHOWN
                },
                "protocol": facts.protocol,
                "time": facts.time_text or rfc3339_ms(facts.time),
                "upgrade": facts.upgrade,
            },
            "source": {
                "address": facts.source_address,
                "spiffe_id": peer.spiffe_id,
                "certificate": _certificate(peer),
            },
            "user": None
            if user is None
            else {"issuer": user.issuer, "subject": user.subject, "claims": user_claims},
            "device": None
            if device is None
            else {
                "issuer": device.issuer,
                "id": device.device_id,
                "bound_to_client_cert": bool(device.bound_to_client_cert),
                "claims": device_claims,
            },
            "destination": {"service": facts.route.service, "route": facts.route.name},
        },
        no_floats=not (user_floats or device_floats),
    )


def input_digest(doc: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON of the whole document (id and time included:
    it identifies this request's input in the audit record)."""
    if isinstance(doc, PreparedInput):
        return doc.sha256
    return sha256_hex(doc)
