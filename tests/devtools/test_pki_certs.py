"""The dev CA issues what WebPKI-style path validation (cryptography.x509.verification) accepts,
SVIDs have the X.509-SVID shape unless a test asks for a bad one, and CRLs list what they revoke."""

from __future__ import annotations

import ipaddress
import stat
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ztproxy.devtools.pki import DevCA, Issued

NOW = datetime(2026, 11, 28, 1, 2, 3, tzinfo=UTC)

SPIFFE = "spiffe://corp.example/ns/prod/sa/checkout"


def _policy(ca: DevCA) -> PolicyBuilder:
    return PolicyBuilder().store(Store([ca.cert]))


def _uris(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def test_server_cert_verifies_for_localhost_and_loopback_ip(ca: DevCA) -> None:
    server = ca.issue_server()
    for name in (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        chain = _policy(ca).build_server_verifier(name).verify(server.cert, [])
        assert chain[-1] == ca.cert
    with pytest.raises(VerificationError):
        _policy(ca).build_server_verifier(x509.DNSName("evil.example")).verify(server.cert, [])
    eku = server.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not server.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_workload_svid_has_exactly_one_spiffe_uri_and_verifies_as_client(ca: DevCA) -> None:
    svid = ca.issue_workload(SPIFFE)
    verified = _policy(ca).build_client_verifier().verify(svid.cert, [])
    assert verified.subjects == [x509.UniformResourceIdentifier(SPIFFE)]
    assert _uris(svid.cert) == [SPIFFE]
    assert svid.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "checkout"
    ku = svid.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign and not ku.crl_sign
    eku = set(svid.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert eku == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}


def test_cert_from_another_ca_does_not_verify(ca: DevCA, other_ca: DevCA) -> None:
    with pytest.raises(VerificationError):
        _policy(ca).build_client_verifier().verify(other_ca.issue_workload(SPIFFE).cert, [])


@pytest.mark.parametrize(
    "uri_sans",
    [
        [],
        [SPIFFE, "spiffe://corp.example/ns/prod/sa/x"],
        ["https://corp.example/ns/prod/sa/checkout"],
    ],
)
def test_uri_sans_override_builds_bad_svid_shapes(ca: DevCA, uri_sans: list[str]) -> None:
    svid = ca.issue_workload(SPIFFE, uri_sans=uri_sans)
    if uri_sans:
        assert _uris(svid.cert) == uri_sans
    else:
        with pytest.raises(x509.ExtensionNotFound):
            svid.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_bad_svid_flags_are_set_and_rejected_as_client(ca: DevCA) -> None:
    as_ca = ca.issue_workload(SPIFFE, is_ca=True, key_usage_cert_sign=True)
    assert as_ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert as_ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    server_only = ca.issue_workload(SPIFFE, client_auth=False)
    eku = list(server_only.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert eku == [ExtendedKeyUsageOID.SERVER_AUTH]
    for bad in (as_ca, server_only):
        with pytest.raises(VerificationError):
            _policy(ca).build_client_verifier().verify(bad.cert, [])


def test_dns_sans_are_added(ca: DevCA) -> None:
    svid = ca.issue_workload(SPIFFE, dns_sans=["checkout.internal"])
    san = svid.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["checkout.internal"]
    assert _uris(svid.cert) == [SPIFFE]


def test_intermediate_chain_verifies_only_with_the_intermediate(ca: DevCA) -> None:
    inter = ca.issue_intermediate("ztproxy dev intermediate")
    svid = inter.issue_workload(SPIFFE)
    assert svid.chain == (inter.cert,)
    verified = _policy(ca).build_client_verifier().verify(svid.cert, list(svid.chain))
    assert verified.chain == [svid.cert, inter.cert, ca.cert]
    with pytest.raises(VerificationError):
        _policy(ca).build_client_verifier().verify(svid.cert, [])


def test_validity_window_is_honoured() -> None:
    ca = DevCA.create(now=NOW - timedelta(days=10))
    expired = ca.issue_workload(
        SPIFFE, not_before=NOW - timedelta(days=2), not_after=NOW - timedelta(days=1)
    )
    assert expired.cert.not_valid_after_utc == NOW - timedelta(days=1)
    at_now = PolicyBuilder().store(Store([ca.cert])).time(NOW)
    with pytest.raises(VerificationError):
        at_now.build_client_verifier().verify(expired.cert, [])
    valid_then = PolicyBuilder().store(Store([ca.cert])).time(NOW - timedelta(days=1, hours=12))
    valid_then.build_client_verifier().verify(expired.cert, [])


def test_ca_created_with_injected_now_issues_inside_its_validity() -> None:
    old = DevCA.create(now=NOW - timedelta(days=800), days=30)
    leaf = old.issue_server()
    assert old.cert.not_valid_before_utc <= leaf.cert.not_valid_before_utc
    assert leaf.cert.not_valid_after_utc <= old.cert.not_valid_after_utc


def test_crl_lists_revoked_serials_and_is_signed_by_the_ca(ca: DevCA, other_ca: DevCA) -> None:
    revoked, kept = ca.issue_workload(SPIFFE), ca.issue_workload(SPIFFE)
    crl = x509.load_pem_x509_crl(ca.crl([revoked], now=NOW))
    assert crl.get_revoked_certificate_by_serial_number(revoked.cert.serial_number) is not None
    assert crl.get_revoked_certificate_by_serial_number(kept.cert.serial_number) is None
    assert crl.issuer == ca.cert.subject and crl.last_update_utc == NOW
    assert crl.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]
    assert not crl.is_signature_valid(other_ca.cert.public_key())  # type: ignore[arg-type]


def test_issued_write_modes_and_chain(tmp_path, ca: DevCA) -> None:  # type: ignore[no-untyped-def]
    inter = ca.issue_intermediate("inter")
    svid = inter.issue_workload(SPIFFE)
    stale = tmp_path / "w.key"
    stale.write_text("old")
    stale.chmod(0o644)  # an existing world-readable file must end up 0600
    cert_path, key_path = svid.write(tmp_path, "w")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    assert x509.load_pem_x509_certificates(cert_path.read_bytes()) == [svid.cert, inter.cert]
    loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert loaded.public_key() == svid.key.public_key()
    assert svid.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8, unencrypted
    ca_cert, ca_key = ca.write(tmp_path / "ca")
    assert ca_cert.name == "ca.pem" and stat.S_IMODE(ca_key.stat().st_mode) == 0o600


_label = st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)
_host = st.one_of(
    st.lists(_label, min_size=1, max_size=3).map(".".join),
    st.ip_addresses().map(str),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(hosts=st.lists(_host, min_size=1, max_size=4, unique=True))
def test_server_sans_are_typed_by_host_kind(ca: DevCA, hosts: list[str]) -> None:
    issued: Issued = ca.issue_server(hosts)
    san = issued.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    names = san.get_values_for_type(x509.DNSName)
    expected_ips = [str(ipaddress.ip_address(h)) for h in hosts if _is_ip(h)]
    assert ips == expected_ips
    assert names == [h for h in hosts if not _is_ip(h)]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
