"""Stage 1 (after the handshake): the calling workload's identity from its certificate.

Takes the DER leaf certificate that OpenSSL has already verified against the client CA
bundle (and CRL); returns a `PeerIdentity` or raises `SvidError` with a stable reason.
It enforces the X.509-SVID rules the TLS library does not know: exactly one URI SAN,
a well-formed SPIFFE ID (scheme `spiffe`, trust domain in the configured set, non-empty
path without dot segments, no query, fragment, port or userinfo), and a leaf that is
not a CA. SPIFFE IDs are parsed and compared structurally, never matched with a
regular expression built from configuration.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Collection
from dataclasses import dataclass

from cryptography import x509

from ..model import PeerIdentity

_TD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_PATH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")


MAX_SPIFFE_ID_BYTES = 2048  # the SPIFFE ID spec's cap


class SvidError(Exception):
    """The certificate is not an acceptable X.509-SVID. `reason` is stable;
    `audit_reason` is what the `tls_rejected` record says (`svid_<reason>` for the
    shape of the leaf, the bare name for chain and trust findings)."""

    def __init__(self, reason: str, *, audit: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.audit_reason = audit or f"svid_{reason}"


@dataclass(frozen=True, slots=True)
class SpiffeId:
    trust_domain: str
    path: str

    def __str__(self) -> str:
        return f"spiffe://{self.trust_domain}{self.path}"


def parse_spiffe_id(uri: str) -> SpiffeId:
    """Parse per the SPIFFE ID spec; raise SvidError("bad_spiffe_id") otherwise."""
    if len(uri.encode("utf-8", "surrogatepass")) > MAX_SPIFFE_ID_BYTES:
        raise SvidError("spiffe_id_too_long", audit="spiffe_id_too_long")
    prefix = "spiffe://"
    if uri[: len(prefix)].lower() != prefix or uri[: len(prefix)] != prefix:
        raise SvidError("bad_spiffe_id")  # scheme must be exactly lowercase "spiffe"
    rest = uri[len(prefix) :]
    if any(c in rest for c in "?#"):
        raise SvidError("bad_spiffe_id")
    slash = rest.find("/")
    td, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    # Trust domain: no userinfo, no port, lowercase only.
    if not td or not set(td) <= _TD_CHARS:
        raise SvidError("bad_spiffe_id")
    if not path or path == "/":
        raise SvidError("spiffe_id_without_path")
    for segment in path[1:].split("/"):
        if segment in ("", ".", "..") or not set(segment) <= _PATH_CHARS:
            raise SvidError("bad_spiffe_id")
    return SpiffeId(td, path)


def thumbprints(der: bytes) -> tuple[str, str]:
    """(x5t#S256 base64url without padding, lowercase hex) of the DER certificate."""
    digest = hashlib.sha256(der).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode(), digest.hex()


def peer_identity(der: bytes, trust_domains: Collection[str]) -> PeerIdentity:
    """Validate the SVID shape of a chain-verified leaf and describe it."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise SvidError("unparsable_certificate") from None
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            raise SvidError("leaf_is_ca")
    except x509.ExtensionNotFound:
        pass
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if ku.key_cert_sign or ku.crl_sign:
            raise SvidError("leaf_is_ca")
    except x509.ExtensionNotFound:
        pass
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise SvidError("no_spiffe_id") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if not uris:
        raise SvidError("no_spiffe_id")
    if len(uris) != 1:
        raise SvidError("multiple_uri_sans")
    sid = parse_spiffe_id(uris[0])
    if sid.trust_domain not in trust_domains:
        raise SvidError("untrusted_trust_domain")
    x5t, hexdigest = thumbprints(der)
    return PeerIdentity(
        spiffe_id=str(sid),
        trust_domain=sid.trust_domain,
        x5t_s256=x5t,
        fingerprint_sha256=hexdigest,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        uri_sans=tuple(uris),
        dns_sans=tuple(san.get_values_for_type(x509.DNSName)),
    )
