"""Review of issue 12: a SPIFFE ID is matched byte for byte, never normalized. Every
other spelling of a trust domain (case, percent-encoding, trailing dot, port, userinfo)
or path is refused, so no certificate can name `corp.example` without writing it
exactly; and a signing certificate's SPIFFE ID with a path is refused whatever the
case of its scheme."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from ztproxy.config.core import TrustDomainConfig
from ztproxy.devtools.pki import DevCA
from ztproxy.tls.spiffe import SvidError, parse_spiffe_id
from ztproxy.tls.trust import load_trust_store, validate_chain


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://corp%2Eexample/ns/prod/sa/x",
        "spiffe://corp.example/ns/prod/sa/%78",
        "spiffe://Corp.Example/ns/prod/sa/x",
        "SPIFFE://corp.example/ns/prod/sa/x",
        "Spiffe://corp.example/ns/prod/sa/x",
        "spiffe://corp.example:8443/ns/prod/sa/x",
        "spiffe://a@corp.example/ns/prod/sa/x",
        "spiffe://corp.example//ns/prod",
        "spiffe://corp.example/ns/prod/",
        "spiffe://corp.example/ns/./prod",
        "spiffe:///ns/prod",
        "spiffe:/corp.example/ns/prod",
        "spiffe://corp.example/ns/pr\u00f6d",
        "spiffe://corp.example\\ns\\prod",
        "spiffe://corp.example/ns prod",
    ],
)
def test_other_spellings_refused(uri: str) -> None:
    with pytest.raises(SvidError):
        parse_spiffe_id(uri)


def test_trailing_dot_is_another_trust_domain() -> None:
    """The ID spec allows the dot; it names another trust domain, never corp.example."""
    assert parse_spiffe_id("spiffe://corp.example./ns/x").trust_domain == "corp.example."


@given(st.text(alphabet=st.sampled_from("spifeSPIFE:/.%@cCorpxamlE2-_ ?#\\"), max_size=40))
def test_accepted_ids_are_exactly_what_was_written(tail: str) -> None:
    uri = "spiffe://" + tail
    try:
        sid = parse_spiffe_id(uri)
    except SvidError:
        return
    assert str(sid) == uri  # no normalization of any part
    assert sid.trust_domain == tail.split("/", 1)[0]
    assert sid.trust_domain == sid.trust_domain.lower()


def test_signer_with_uppercase_scheme_spiffe_path_refused(tmp_path: Path) -> None:
    root = DevCA.create("spelling root")
    web = root.issue_workload(
        None,
        uri_sans=["SPIFFE://corp.example/ns/prod/sa/web"],
        is_ca=True,
        key_usage_cert_sign=True,
    )
    minter = DevCA(
        cert=web.cert,
        key=web.key,
        cert_pem=web.cert_pem,  # type: ignore[arg-type]
        leaf_chain=(web.cert,),
    )
    leaf = minter.issue_workload("spiffe://corp.example/ns/prod/sa/admin")
    (tmp_path / "ca.pem").write_bytes(root.cert_pem)
    store = load_trust_store([TrustDomainConfig("corp.example", str(tmp_path / "ca.pem"), None)])
    der = serialization.Encoding.DER
    chain = [c.public_bytes(der) for c in (leaf.cert, web.cert, root.cert)]
    with pytest.raises(SvidError) as err:
        validate_chain(chain, store, datetime.now(UTC).timestamp())
    assert err.value.audit_reason == "chain_ca_with_spiffe_path"
