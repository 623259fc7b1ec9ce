"""Trust per SPIFFE trust domain, and X.509-SVID validation of a whole client chain.

OpenSSL does the handshake against the union of every trust domain's bundle: it builds
the chain from the peer's certificates, checks every signature, the validity window of
every certificate, basicConstraints and path lengths (X.509 strict). This module then
takes the chain OpenSSL verified (leaf first, anchor last) and applies what OpenSSL does
not know, against the bundle and CRLs of the ONE trust domain the leaf's SPIFFE ID names:

- the leaf is a well-formed X.509-SVID (see spiffe.py), SPIFFE ID at most 2048 bytes;
- the chain ends in an anchor of that trust domain's bundle (a federated partner's CA
  cannot mint IDs in another trust domain): `trust_domain_bundle_mismatch`;
- every signing certificate is a CA (CA:TRUE, keyCertSign when key usage is present)
  and a SPIFFE ID on it has no path: `chain_signer_not_ca`, `chain_ca_with_spiffe_path`;
- path-length constraints hold: `chain_path_length_exceeded`;
- every certificate is inside its validity window now: `expired`, `not_yet_valid`;
- with a CRL file, every certificate but the anchor is checked against its issuer's CRL
  (signature and nextUpdate checked): `client_cert_revoked`, `intermediate_revoked`,
  `crl_missing`, `crl_expired`.

The same function re-validates a live connection's stored chain after a reload (new
bundles, new CRLs) and when the chain's `valid_until` passes (an expired certificate on a
keep-alive connection). Everything here is pure: no I/O after `load_trust_store`.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from ..config.core import TrustDomainConfig
from ..model import PeerIdentity
from .spiffe import SvidError, peer_identity


class TrustMaterialError(Exception):
    """An unreadable or unusable bundle or CRL file; the message names the key path."""


@dataclass(frozen=True, slots=True)
class DomainTrust:
    name: str
    anchors: frozenset[bytes]  # DER of the bundle's certificates
    crls: Mapping[bytes, tuple[x509.CertificateRevocationList, ...]] | None  # issuer DER name


MEMO_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class TrustStore:
    domains: Mapping[str, DomainTrust]
    bundle_pem: str  # every domain's anchors, for OpenSSL's chain building
    # Chains validated under THIS store (one per runtime: a reload makes a new store, so
    # nothing here outlives the bundles and CRLs it was checked against). Bounded; an
    # entry is used only inside its window, where it equals a full validation.
    memo: dict[tuple[bytes, ...], ValidatedChain] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.domains)


@dataclass(frozen=True, slots=True)
class ValidatedChain:
    """A chain that passed `validate_chain`, with the instant it must be looked at again
    (the earliest notAfter of the chain or nextUpdate of a CRL used), as a POSIX time."""

    peer: PeerIdentity
    chain: tuple[bytes, ...]
    valid_until: float
    store: TrustStore
    valid_from: float = 0.0  # the latest notBefore of the chain

    def still_valid(self, store: TrustStore, now: float) -> bool:
        """Exactly `validate_chain(self.chain, store, now)` succeeding, without the work:
        under the same store, the only inputs that depend on `now` are the windows."""
        return store is self.store and self.valid_from <= now < self.valid_until


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def load_trust_store(domains: Sequence[TrustDomainConfig]) -> TrustStore:
    """Read every bundle and CRL file (blocking: call it off the event loop)."""
    out: dict[str, DomainTrust] = {}
    pems: list[str] = []
    for i, td in enumerate(domains):
        key = f"trust_domains[{i}]"
        try:
            certs = x509.load_pem_x509_certificates(_read(td.bundle_file))
        except (OSError, ValueError) as exc:
            raise TrustMaterialError(
                f"{key}.bundle_file: cannot load {td.bundle_file}: "
                f"{getattr(exc, 'strerror', None) or 'not a PEM bundle'}"
            ) from None
        anchors = frozenset(c.public_bytes(serialization.Encoding.DER) for c in certs)
        pems += [c.public_bytes(serialization.Encoding.PEM).decode() for c in certs]
        crls: dict[bytes, tuple[x509.CertificateRevocationList, ...]] | None = None
        if td.crl_file:
            crls = {}
            try:
                for crl in _load_crls(_read(td.crl_file)):
                    issuer = crl.issuer.public_bytes()
                    crls[issuer] = (*crls.get(issuer, ()), crl)
            except (OSError, ValueError) as exc:
                raise TrustMaterialError(
                    f"{key}.crl_file: cannot load {td.crl_file}: "
                    f"{getattr(exc, 'strerror', None) or 'not a PEM CRL'}"
                ) from None
        out[td.name] = DomainTrust(td.name, anchors, crls)
    return TrustStore(out, "".join(pems))


def _load_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    marker = b"-----BEGIN X509 CRL-----"
    parts = [marker + p for p in data.split(marker)[1:]]
    if not parts:
        raise ValueError("no CRL")
    return [x509.load_pem_x509_crl(p) for p in parts]


def _ext(cert: x509.Certificate, cls: type[Any]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def _has_spiffe_path(cert: x509.Certificate) -> bool:
    san = _ext(cert, x509.SubjectAlternativeName)
    if san is None:
        return False
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri[:9].lower() == "spiffe://" and "/" in uri[9:]:
            return True
    return False


def validate_chain(chain: Sequence[bytes], store: TrustStore, now: float) -> ValidatedChain:
    """Validate an OpenSSL-verified chain (DER, leaf first, anchor last) as an X.509-SVID
    chain of the trust domain its leaf names. Raises SvidError with the stable reason.
    OpenSSL decodes only the extensions it uses; `cryptography` parses every one it knows
    (lazily, on first access) and raises on a malformed one: that is a refusal too."""
    try:
        return _validate_chain(chain, store, now)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SvidError("unparsable_certificate") from None


def _validate_chain(chain: Sequence[bytes], store: TrustStore, now: float) -> ValidatedChain:
    if not chain:
        raise SvidError("no_verified_chain", audit="no_verified_chain")
    peer = peer_identity(chain[0], store.names)
    domain = store.domains[peer.trust_domain]
    if chain[-1] not in domain.anchors:
        raise SvidError("trust_domain_bundle_mismatch", audit="trust_domain_bundle_mismatch")
    try:
        certs = [x509.load_der_x509_certificate(der) for der in chain]
    except ValueError:
        raise SvidError("unparsable_certificate") from None
    at = datetime.fromtimestamp(now, UTC)
    valid_until = now + 86400.0 * 365
    valid_from = 0.0
    for i, cert in enumerate(certs):
        if at < cert.not_valid_before_utc:
            raise SvidError("not_yet_valid", audit="not_yet_valid")
        if at > cert.not_valid_after_utc:
            raise SvidError("expired", audit="expired")
        valid_until = min(valid_until, cert.not_valid_after_utc.timestamp())
        valid_from = max(valid_from, cert.not_valid_before_utc.timestamp())
        if i == 0:
            continue
        bc = _ext(cert, x509.BasicConstraints)
        ku = _ext(cert, x509.KeyUsage)
        if bc is None or not bc.ca or (ku is not None and not ku.key_cert_sign):
            raise SvidError("chain_signer_not_ca", audit="chain_signer_not_ca")
        if _has_spiffe_path(cert):
            raise SvidError("chain_ca_with_spiffe_path", audit="chain_ca_with_spiffe_path")
        if bc.path_length is not None and i - 1 > bc.path_length:
            raise SvidError("chain_path_length_exceeded", audit="chain_path_length_exceeded")
    if domain.crls is not None:
        for i in range(len(certs) - 1):
            cert, issuer = certs[i], certs[i + 1]
            crls = [
                c
                for c in domain.crls.get(issuer.subject.public_bytes(), ())
                if c.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
            ]
            if not crls:
                raise SvidError("crl_missing", audit="crl_missing")
            for crl in crls:
                next_update = crl.next_update_utc
                if next_update is not None:
                    if at > next_update:
                        raise SvidError("crl_expired", audit="crl_expired")
                    valid_until = min(valid_until, next_update.timestamp())
                if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                    reason = "client_cert_revoked" if i == 0 else "intermediate_revoked"
                    raise SvidError(reason, audit=reason)
    return ValidatedChain(peer, tuple(chain), valid_until, store, valid_from)


def validate_chain_memo(chain: Sequence[bytes], store: TrustStore, now: float) -> ValidatedChain:
    """`validate_chain`, remembering successes per store: the same client presenting the
    same chain on a new connection costs one dict lookup and the window comparison
    (`ValidatedChain.still_valid`, which is exactly where a full validation would pass
    again). Refusals are never remembered."""
    key = tuple(chain)
    known = store.memo.get(key)
    if known is not None and known.still_valid(store, now):
        return known
    validated = validate_chain(key, store, now)
    if len(store.memo) >= MEMO_ENTRIES:
        store.memo.clear()
    store.memo[key] = validated
    return validated


def verified_chain(ssl_object: Any) -> list[bytes] | None:
    """The chain OpenSSL verified in this handshake, DER, leaf first; None when the
    runtime cannot tell (then the caller refuses). Python 3.13 has the public
    `SSLObject.get_verified_chain()`; 3.10-3.12 have the same method on the private
    `_sslobj`. A resumed session has no verified chain (an empty list)."""
    get = getattr(ssl_object, "get_verified_chain", None)
    if get is None:
        get = getattr(getattr(ssl_object, "_sslobj", None), "get_verified_chain", None)
    if get is None:
        return None
    try:
        items = get()
    except (ssl.SSLError, ValueError):
        return None
    if not items:
        return []
    out: list[bytes] = []
    for item in items:
        if isinstance(item, bytes):
            out.append(item)
        else:
            out.append(item.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
    return out
