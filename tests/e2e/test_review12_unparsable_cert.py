"""Review of issue 12: a certificate OpenSSL verifies but `cryptography` cannot parse.

OpenSSL decodes only the extensions it uses; `cryptography` parses every extension it
knows when `cert.extensions` is first read, and raises ValueError on a malformed one
(here a non-critical IssuerAltName whose URI is not IA5). Anyone holding a CA:TRUE
certificate under the bundle (issue 12, finding 1) can mint such a grandchild. On the
merged code the ValueError escaped `validate_chain` and the handshake task: no
`tls_rejected` record, and the accepted TLS connection was neither handed over nor
closed (held open for ever: one leaked socket per attempt)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID
from e2e_harness import StartProxy, open_route

from ztproxy.devtools.pki import DevCA, DevPki, Issued, key_pem
from ztproxy.tls.spiffe import SvidError
from ztproxy.tls.trust import TrustStore, validate_chain

CHECKOUT = "spiffe://corp.example/ns/prod/sa/checkout"
BAD_IAN = x509.UnrecognizedExtension(
    ExtensionOID.ISSUER_ALTERNATIVE_NAME, b"\x30\x03\x86\x01\xff"
)  # URI with a non-IA5 byte


def _dev_ca(pki: DevPki) -> DevCA:
    cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    return DevCA(cert=cert, key=key, cert_pem=pki.ca_cert.read_bytes())  # type: ignore[arg-type]


def malformed_leaf(issuer: DevCA, spiffe_id: str = CHECKOUT) -> Issued:
    """A well-formed X.509-SVID (OpenSSL-strict-valid) plus one malformed extension."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "checkout")]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=False
        )
        .add_extension(BAD_IAN, critical=False)
        .sign(issuer.key, hashes.SHA256())
    )
    return Issued(
        cert=cert,
        key=key,
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key_pem(key),
        chain=issuer.leaf_chain,
    )


def _exchange(port: int, ctx: ssl.SSLContext) -> bytes | str:
    """Handshake, send a GET, read to the end. Returns the bytes, or "held open" when
    the proxy neither answered nor closed the connection within 10 s."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        tls = ctx.wrap_socket(raw, server_hostname="localhost")
    except (ssl.SSLError, OSError):
        raw.close()
        return b""
    data = b""
    try:
        tls.sendall(b"GET /payments/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        while chunk := tls.recv(65536):
            data += chunk
    except TimeoutError:
        return "held open"
    except (ssl.SSLError, OSError):
        pass
    finally:
        tls.close()
    return data


async def test_malformed_extension_grandchild_refused_audited_and_closed(
    start_proxy: StartProxy, upstream: str, pki: DevPki, tmp_path: Path
) -> None:
    run = await start_proxy(routes=[open_route(upstream)])
    web = _dev_ca(pki).issue_workload(
        "spiffe://corp.example/ns/prod/sa/web", is_ca=True, key_usage_cert_sign=True
    )
    minter = DevCA(
        cert=web.cert,
        key=web.key,
        cert_pem=web.cert_pem,  # type: ignore[arg-type]
        leaf_chain=(web.cert,),
    )
    cert, key = malformed_leaf(minter).write(tmp_path, "bad")
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(cert), str(key))
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    got = await asyncio.to_thread(_exchange, run.proxy.port, ctx)
    assert got != "held open"
    assert isinstance(got, bytes) and not got.startswith(b"HTTP/1.1 2")
    for _ in range(200):  # the audit writer is a thread: wait for the record
        recs = run.audit_records()
        if any(r.get("kind") == "tls_rejected" for r in recs):
            break
        await asyncio.sleep(0.025)
    assert [r["reason"] for r in recs if r.get("kind") == "tls_rejected"] == [
        "svid_unparsable_certificate"
    ]
    assert not [r for r in recs if r.get("kind") == "request"]
    assert (await run.request("GET", "/payments/x"))[0] == 200  # still serving


def test_validate_chain_turns_parse_errors_into_a_reason(pki: DevPki, tmp_path: Path) -> None:
    from ztproxy.config.core import TrustDomainConfig
    from ztproxy.tls.trust import load_trust_store

    store: TrustStore = load_trust_store(
        [TrustDomainConfig("corp.example", str(pki.ca_cert), None)]
    )
    root = _dev_ca(pki)
    der = serialization.Encoding.DER
    chain = [malformed_leaf(root).cert.public_bytes(der), root.cert.public_bytes(der)]
    with pytest.raises(SvidError) as err:
        validate_chain(chain, store, datetime.now(UTC).timestamp())
    assert err.value.audit_reason == "svid_unparsable_certificate"
