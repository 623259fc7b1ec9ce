"""Dev PKI: a throwaway CA, server and workload (X.509-SVID) certificates, issuer keys, JWKS.

Stage: none (tooling for `ztproxy certs init`, the demo and the tests; never used by the
proxy at run time). Takes names, SPIFFE IDs and an optional `now`; returns certificates and
keys as `cryptography` objects plus their PEM bytes, and writes them to disk with private
keys in mode 0600. Trusts nothing: everything here is freshly generated and for dev only.
Production material comes from SPIRE / cert-manager / a corporate CA (see certs/README.md).

The directory layout `init_dev_pki` writes (and `DevPki`, the issuer constants) lives in
`layout`; it is re-exported here, the one import path the CLI, demo, bench and tests use.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The layout (DevPki, init_dev_pki, issuer constants) imports DevCA from here at call time.
from .layout import (
    AUDIENCE,
    DEFAULT_WORKLOADS,
    DEVICE_ISSUER,
    DEVICE_KID,
    USER_ISSUER,
    USER_KID,
    DevPki,
    init_dev_pki,
    workload_spiffe_id,
)

# Token-key helpers live in mint.py (imports point pki -> mint); re-exported as part of this API.
from .mint import generate_signing_key, jwks, public_jwk, x5t_s256

__all__ = [
    "AUDIENCE",
    "DEFAULT_WORKLOADS",
    "DEVICE_ISSUER",
    "DEVICE_KID",
    "USER_ISSUER",
    "USER_KID",
    "DevCA",
    "DevPki",
    "Issued",
    "generate_signing_key",
    "init_dev_pki",
    "jwks",
    "public_jwk",
    "workload_spiffe_id",
    "x5t_s256",
]

ORG = "ztproxy dev"
# Certificates start a little in the past so a peer with a slightly slow clock accepts them.
BACKDATE = timedelta(minutes=5)
LEAF_DAYS = 90


def key_pem(key: PrivateKeyTypes) -> bytes:
    """PKCS8 PEM, unencrypted (dev material only)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file created 0600 (never briefly world-readable); fix mode if it existed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(data)


def write_public(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o644)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


@dataclass(frozen=True, slots=True)
class Issued:
    """A leaf certificate, its private key, and the intermediates it must present."""

    cert: x509.Certificate
    key: PrivateKeyTypes
    cert_pem: bytes
    key_pem: bytes
    chain: tuple[x509.Certificate, ...] = ()

    def write(self, directory: str | Path, name: str) -> tuple[Path, Path]:
        """Writes name.pem (leaf, then intermediates) and name.key (mode 0600)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = d / f"{name}.pem", d / f"{name}.key"
        write_public(cert_path, self.cert_pem + b"".join(_pem(c) for c in self.chain))
        write_private(key_path, self.key_pem)
        return cert_path, key_path


@dataclass(frozen=True, slots=True)
class DevCA:
    """A signing CA. `leaf_chain` is what a leaf issued here presents after itself."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_pem: bytes
    leaf_chain: tuple[x509.Certificate, ...] = ()

    @classmethod
    def create(
        cls, common_name: str = "ztproxy dev CA", *, now: datetime | None = None, days: int = 365
    ) -> DevCA:
        key = ec.generate_private_key(ec.SECP256R1())
        start = (now or datetime.now(UTC)) - BACKDATE
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + BACKDATE + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert=cert, key=key, cert_pem=_pem(cert))

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)

    def write(self, directory: str | Path, name: str = "ca") -> tuple[Path, Path]:
        """Writes name.pem and name.key (mode 0600)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        write_public(d / f"{name}.pem", self.cert_pem)
        write_private(d / f"{name}.key", self.key_pem)
        return d / f"{name}.pem", d / f"{name}.key"

    def _window(
        self, not_before: datetime | None, not_after: datetime | None
    ) -> tuple[datetime, datetime]:
        start = not_before
        if start is None:
            start = datetime.now(UTC) - BACKDATE
            if not self.cert.not_valid_before_utc <= start < self.cert.not_valid_after_utc:
                start = self.cert.not_valid_before_utc  # a CA made with an injected `now`
        end = not_after or min(start + timedelta(days=LEAF_DAYS), self.cert.not_valid_after_utc)
        return start, end

    def _sign(
        self,
        subject: x509.Name,
        public_key: Any,
        window: tuple[datetime, datetime],
        extensions: Sequence[tuple[x509.ExtensionType, bool]],
    ) -> x509.Certificate:
        ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(window[0])
            .not_valid_after(window[1])
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
            )
        )
        for ext, critical in extensions:
            builder = builder.add_extension(ext, critical=critical)
        return builder.sign(self.key, hashes.SHA256())

    def _leaf(self, cert: x509.Certificate, key: PrivateKeyTypes) -> Issued:
        return Issued(
            cert=cert, key=key, cert_pem=_pem(cert), key_pem=key_pem(key), chain=self.leaf_chain
        )

    def issue_server(
        self,
        hosts: Sequence[str] = ("localhost", "127.0.0.1"),
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> Issued:
        """DNS SANs for names, IP SANs for addresses; EKU serverAuth; not a CA."""
        if not hosts:
            raise ValueError("issue_server needs at least one host")
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._sign(
            _name(hosts[0]),
            key.public_key(),
            self._window(not_before, not_after),
            [
                (x509.BasicConstraints(ca=False, path_length=None), True),
                (_key_usage(), True),
                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
                (x509.SubjectAlternativeName(sans), False),
            ],
        )
        return self._leaf(cert, key)

    def issue_workload(
        self,
        spiffe_id: str | None,
        *,
        uri_sans: Sequence[str] | None = None,
        dns_sans: Sequence[str] = (),
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        is_ca: bool = False,
        key_usage_cert_sign: bool = False,
        client_auth: bool = True,
    ) -> Issued:
        """An X.509-SVID: exactly one URI SAN (spiffe_id) unless `uri_sans` overrides it.

        The overrides exist so tests can build bad SVID shapes (no URI, two URIs, an https
        URI, a CA bit, keyCertSign); the defaults follow the X.509-SVID spec.
        """
        uris = list(uri_sans) if uri_sans is not None else ([spiffe_id] if spiffe_id else [])
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        sans += [x509.DNSName(d) for d in dns_sans]
        ekus = [ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else []
        ekus.append(ExtendedKeyUsageOID.SERVER_AUTH)
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=is_ca, path_length=None), True),
            (_key_usage(cert_sign=key_usage_cert_sign), True),
            (x509.ExtendedKeyUsage(ekus), False),
        ]
        if sans:
            extensions.append((x509.SubjectAlternativeName(sans), False))
        key = ec.generate_private_key(ec.SECP256R1())
        subject = _name(_cn_from_spiffe(spiffe_id or (uris[0] if uris else "")))
        cert = self._sign(
            subject, key.public_key(), self._window(not_before, not_after), extensions
        )
        return self._leaf(cert, key)

    def issue_intermediate(self, common_name: str) -> DevCA:
        """A CA signed by this one (path length 0), for chain tests."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._sign(
            _name(common_name),
            key.public_key(),
            self._window(None, None),
            [
                (x509.BasicConstraints(ca=True, path_length=0), True),
                (_key_usage(cert_sign=True), True),
            ],
        )
        return DevCA(cert=cert, key=key, cert_pem=_pem(cert), leaf_chain=(cert, *self.leaf_chain))

    def crl(
        self, revoked: Sequence[Issued | x509.Certificate], *, now: datetime | None = None
    ) -> bytes:
        """A PEM CRL signed by this CA listing the serials of `revoked`."""
        at = now or datetime.now(UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(at)
            .next_update(at + timedelta(days=1))
            .add_extension(x509.CRLNumber(int(at.timestamp())), critical=False)
        )
        for item in revoked:
            cert = item.cert if isinstance(item, Issued) else item
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(cert.serial_number)
                .revocation_date(at)
                .build()
            )
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _key_usage(*, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _cn_from_spiffe(spiffe_id: str) -> str:
    """The last path segment of a SPIFFE ID (spiffe://td/ns/prod/sa/checkout -> checkout)."""
    tail = spiffe_id.rstrip("/").rsplit("/", 1)[-1] if "://" in spiffe_id else spiffe_id
    return tail or "workload"
