"""X.509-SVID chain validation (tls/trust.validate_chain) on chains built with
cryptography, no sockets: each rule and its stable reason, the per-trust-domain anchor,
CRLs for every certificate of the chain; and the trust_domains config with its one-line
migration error for the old form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from ztproxy.config.core import TrustDomainConfig
from ztproxy.config.load import parse_config
from ztproxy.devtools.pki import DevCA, Issued
from ztproxy.errors import ConfigError
from ztproxy.tls.spiffe import SvidError, parse_spiffe_id
from ztproxy.tls.trust import TrustStore, load_trust_store, validate_chain

ID = "spiffe://corp.example/ns/prod/sa/checkout"
DER = serialization.Encoding.DER


def _der(*certs: x509.Certificate) -> list[bytes]:
    return [c.public_bytes(DER) for c in certs]


def _chain(leaf: Issued, root: DevCA) -> list[bytes]:
    return _der(leaf.cert, *leaf.chain, root.cert)


def _store(tmp: Path, roots: dict[str, DevCA], crls: dict[str, bytes] | None = None) -> TrustStore:
    tds = []
    for name, ca in roots.items():
        (tmp / f"{name}.pem").write_bytes(ca.cert_pem)
        crl = None
        if crls and name in crls:
            (tmp / f"{name}.crl").write_bytes(crls[name])
            crl = str(tmp / f"{name}.crl")
        tds.append(TrustDomainConfig(name, str(tmp / f"{name}.pem"), crl))
    return load_trust_store(tds)


def _reason(chain: list[bytes], store: TrustStore, now: float | None = None) -> str:
    with pytest.raises(SvidError) as err:
        validate_chain(chain, store, now or datetime.now(UTC).timestamp())
    return err.value.audit_reason


@pytest.fixture(scope="module")
def root() -> DevCA:
    return DevCA.create("corp root")


def test_valid_chain_through_an_intermediate(root: DevCA, tmp_path: Path) -> None:
    inter = root.issue_intermediate("issuing")
    leaf = inter.issue_workload(ID)
    store = _store(tmp_path, {"corp.example": root}, {"corp.example": root.crl([]) + inter.crl([])})
    got = validate_chain(_chain(leaf, root), store, datetime.now(UTC).timestamp())
    assert got.peer.spiffe_id == ID
    assert got.valid_until <= leaf.cert.not_valid_after_utc.timestamp()


def test_ca_with_spiffe_path_cannot_sign(root: DevCA, tmp_path: Path) -> None:
    web = root.issue_workload(
        "spiffe://corp.example/ns/prod/sa/web", is_ca=True, key_usage_cert_sign=True
    )
    minter = DevCA(
        cert=web.cert,
        key=web.key,
        cert_pem=web.cert_pem,  # type: ignore[arg-type]
        leaf_chain=(web.cert,),
    )
    store = _store(tmp_path, {"corp.example": root})
    assert _reason(_chain(minter.issue_workload(ID), root), store) == "chain_ca_with_spiffe_path"


def test_signer_must_be_a_ca(root: DevCA, tmp_path: Path) -> None:
    plain = root.issue_workload("spiffe://corp.example/ns/prod/sa/web")
    signer = DevCA(
        cert=plain.cert,
        key=plain.key,
        cert_pem=plain.cert_pem,  # type: ignore[arg-type]
        leaf_chain=(plain.cert,),
    )
    store = _store(tmp_path, {"corp.example": root})
    assert _reason(_chain(signer.issue_workload(ID), root), store) == "chain_signer_not_ca"


def test_path_length(root: DevCA, tmp_path: Path) -> None:
    inter = root.issue_intermediate("pathlen 0")
    below = inter.issue_intermediate("one too deep")
    store = _store(tmp_path, {"corp.example": root})
    assert _reason(_chain(below.issue_workload(ID), root), store) == "chain_path_length_exceeded"


def test_anchor_must_belong_to_the_leafs_trust_domain(root: DevCA, tmp_path: Path) -> None:
    partner = DevCA.create("partner root")
    store = _store(tmp_path, {"corp.example": root, "partner.example": partner})
    forged = partner.issue_workload(ID)
    assert _reason(_chain(forged, partner), store) == "trust_domain_bundle_mismatch"
    own = partner.issue_workload("spiffe://partner.example/ns/x/sa/y")
    validate_chain(_chain(own, partner), store, datetime.now(UTC).timestamp())


def test_every_certificate_inside_its_window(root: DevCA, tmp_path: Path) -> None:
    inter = root.issue_intermediate("issuing")
    leaf = inter.issue_workload(ID)
    store = _store(tmp_path, {"corp.example": root})
    later = inter.cert.not_valid_after_utc.timestamp() + 1
    assert _reason(_chain(leaf, root), store, later) == "expired"
    earlier = inter.cert.not_valid_before_utc.timestamp() - 1
    assert _reason(_chain(leaf, root), store, earlier) == "not_yet_valid"


def test_crl_for_every_certificate(root: DevCA, tmp_path: Path) -> None:
    inter = root.issue_intermediate("issuing")
    leaf = inter.issue_workload(ID)
    chain = _chain(leaf, root)
    revoked_inter = _store(
        tmp_path, {"corp.example": root}, {"corp.example": root.crl([inter.cert]) + inter.crl([])}
    )
    assert _reason(chain, revoked_inter) == "intermediate_revoked"
    revoked_leaf = _store(
        tmp_path, {"corp.example": root}, {"corp.example": root.crl([]) + inter.crl([leaf])}
    )
    assert _reason(chain, revoked_leaf) == "client_cert_revoked"
    missing = _store(tmp_path, {"corp.example": root}, {"corp.example": root.crl([])})
    assert _reason(chain, missing) == "crl_missing"
    forged = DevCA.create("issuing")  # same name, another key: its CRL does not count
    wrong_signer = _store(
        tmp_path, {"corp.example": root}, {"corp.example": root.crl([]) + forged.crl([])}
    )
    assert _reason(chain, wrong_signer) == "crl_missing"
    fine = _store(tmp_path, {"corp.example": root}, {"corp.example": root.crl([]) + inter.crl([])})
    stale = (datetime.now(UTC) + timedelta(days=2)).timestamp()
    assert _reason(chain, fine, stale) == "crl_expired"


@given(st.integers(min_value=2030, max_value=2070))
def test_spiffe_id_length_cap(total: int) -> None:
    prefix = "spiffe://corp.example/"
    uri = prefix + "a" * (total - len(prefix))
    if total <= 2048:
        assert str(parse_spiffe_id(uri)) == uri
    else:
        with pytest.raises(SvidError) as err:
            parse_spiffe_id(uri)
        assert err.value.audit_reason == "spiffe_id_too_long"


def _files(tmp: Path) -> None:
    for name in ("s.pem", "s.key", "ca.pem"):
        (tmp / name).write_text("x")


@pytest.mark.parametrize(
    "raw",
    [
        {
            "trust_domains": ["corp.example"],
            "listener": {"cert_file": "s.pem", "key_file": "s.key", "client_ca_file": "ca.pem"},
        },
        {
            "trust_domains": ["corp.example"],
            "listener": {"cert_file": "s.pem", "key_file": "s.key"},
        },
        {
            "listener": {
                "cert_file": "s.pem",
                "key_file": "s.key",
                "client_ca_file": "ca.pem",
                "crl_file": "ca.pem",
            }
        },
    ],
)
def test_old_trust_form_is_one_line_saying_what_to_write(tmp_path: Path, raw: dict) -> None:
    _files(tmp_path)
    raw = {
        **raw,
        "routes": [
            {
                "name": "a",
                "service": "a",
                "upstream": "http://127.0.0.1:1",
                "user": "none",
                "device": "none",
            }
        ],
    }
    with pytest.raises(ConfigError) as err:
        parse_config(raw, str(tmp_path))
    trust = [p for p in err.value.problems if "trust_domains" in p or "client_ca" in p]
    assert len(trust) == 1
    assert "bundle_file" in trust[0] and "\n" not in trust[0]


def test_new_form_with_a_stray_listener_bundle_is_refused(tmp_path: Path) -> None:
    _files(tmp_path)
    raw = {
        "trust_domains": [{"name": "corp.example", "bundle_file": "ca.pem"}],
        "listener": {"cert_file": "s.pem", "key_file": "s.key", "client_ca_file": "ca.pem"},
        "routes": [
            {
                "name": "a",
                "service": "a",
                "upstream": "http://127.0.0.1:1",
                "user": "none",
                "device": "none",
            }
        ],
    }
    with pytest.raises(ConfigError) as err:
        parse_config(raw, str(tmp_path))
    assert any(
        p.startswith("listener.client_ca_file: moved to trust_domains") for p in err.value.problems
    )


_PROPERTY: dict[str, object] = {}


def _property_fixture() -> tuple[list[bytes], TrustStore, float]:
    if not _PROPERTY:
        import tempfile

        root = DevCA.create("property root")
        inter = root.issue_intermediate("property issuing")
        leaf = inter.issue_workload(ID)
        tmp = Path(tempfile.mkdtemp())
        store = _store(tmp, {"corp.example": root}, {"corp.example": root.crl([]) + inter.crl([])})
        _PROPERTY.update(chain=_chain(leaf, root), store=store, t0=datetime.now(UTC).timestamp())
    return (_PROPERTY["chain"], _PROPERTY["store"], _PROPERTY["t0"])  # type: ignore[return-value]


@given(st.floats(min_value=-400 * 86400, max_value=400 * 86400, allow_nan=False))
def test_connection_fast_path_agrees_with_full_validation(offset: float) -> None:
    """ConnState's per-request check (`still_valid`) answers yes only where validating the
    stored chain again would pass with the same peer."""
    chain, store, t0 = _property_fixture()
    validated = validate_chain(chain, store, t0)
    now = t0 + offset
    if validated.still_valid(store, now):
        assert validate_chain(chain, store, now).peer == validated.peer
    try:
        validate_chain(chain, store, now)
    except SvidError:
        assert not validated.still_valid(store, now)
    same_content = TrustStore(dict(store.domains), store.bundle_pem)
    assert not validated.still_valid(same_content, now)  # another runtime: validate again


@given(
    st.lists(
        st.floats(min_value=-400 * 86400, max_value=400 * 86400, allow_nan=False),
        min_size=1,
        max_size=6,
    )
)
def test_handshake_memo_agrees_with_full_validation(offsets: list[float]) -> None:
    """The per-store memo of validated chains answers as validate_chain for every time,
    in any order of handshakes."""
    from ztproxy.tls.trust import validate_chain_memo

    chain, store, t0 = _property_fixture()
    for offset in offsets:
        now = t0 + offset
        try:
            want = validate_chain(chain, store, now).peer
        except SvidError as exc:
            with pytest.raises(SvidError) as err:
                validate_chain_memo(chain, store, now)
            assert err.value.audit_reason == exc.audit_reason
        else:
            assert validate_chain_memo(chain, store, now).peer == want
