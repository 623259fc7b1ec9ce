"""Header hygiene: hop-by-hop and Connection-named headers go, asserted identity
headers are stripped in every spelling and set, never appended."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from ztproxy.config.core import HeadersConfig
from ztproxy.stages.headers import downstream_headers, upstream_headers, visible_headers

CFG = HeadersConfig()
STRIPPED = frozenset(CFG.strip) | frozenset(CFG.asserted())
CREDS = frozenset({"authorization", "cookie", "proxy-authorization", "device-authorization"})


def h(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_spoofed_identity_headers_are_replaced_in_every_spelling() -> None:
    incoming = h(
        ("X-Client-Spiffe-Id", "spiffe://corp.example/ns/prod/sa/admin"),
        ("x_client_spiffe_id", "spiffe://evil"),
        ("X-CLIENT-SPIFFE-ID", "x"),
        ("X-User", "root"),
        ("x_user", "root"),
        ("X_USER", "root"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("x-forwarded-for", "1.2.3.4"),
        ("Accept", "*/*"),
    )
    out = upstream_headers(
        incoming,
        stripped=STRIPPED,
        credential_headers=CREDS,
        asserted={
            "x-client-spiffe-id": "spiffe://corp.example/real",
            "x-forwarded-for": "127.0.0.1",
        },
    )
    assert out.getall("x-client-spiffe-id") == ["spiffe://corp.example/real"]
    assert out.getall("x-forwarded-for") == ["127.0.0.1"]
    assert "x-user" not in out and "x_user" not in out
    assert not any("_" in k for k in out)
    assert out["accept"] == "*/*"


def test_hop_by_hop_and_connection_named_headers_dropped() -> None:
    incoming = h(
        ("Connection", "keep-alive, X-Secret-Hop"),
        ("X-Secret-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Upgrade", "h2c"),
        ("Proxy-Authorization", "Basic Zm9v"),
        ("Trailer", "x"),
        ("X-Keep", "yes"),
    )
    out = upstream_headers(incoming, stripped=STRIPPED, credential_headers=CREDS, asserted={})
    assert list(out.keys()) == ["X-Keep"]


def test_credentials_not_forwarded_unless_kept() -> None:
    incoming = h(
        ("Authorization", "Bearer abc"), ("Device-Authorization", "Bearer d"), ("Cookie", "s=1")
    )
    out = upstream_headers(incoming, stripped=STRIPPED, credential_headers=CREDS, asserted={})
    assert len(out) == 0
    kept = upstream_headers(
        incoming, stripped=STRIPPED, credential_headers=CREDS, asserted={}, keep=("authorization",)
    )
    assert kept["Authorization"] == "Bearer abc" and "cookie" not in kept


def test_policy_headers_never_override_identity() -> None:
    out = upstream_headers(
        h(),
        stripped=STRIPPED,
        credential_headers=CREDS,
        asserted={"x-client-spiffe-id": "real"},
        policy_headers={
            "X-Client-Spiffe-Id": "forged",
            "x_user": "root",
            "Authorization": "Bearer x",
            "Host": "evil",
            "X-Tenant": "acme",
        },
    )
    assert out.getall("x-client-spiffe-id") == ["real"]
    assert out["x-tenant"] == "acme"
    assert "x-user" not in out and "authorization" not in out and "host" not in out


def test_visible_headers_hide_credentials_and_asserted() -> None:
    incoming = h(
        ("Authorization", "Bearer t"),
        ("Cookie", "c"),
        ("Device-Authorization", "d"),
        ("X-User", "x"),
        ("Content-Type", "application/json"),
        ("Accept", "a"),
        ("accept", "b"),
    )
    seen = visible_headers(incoming, STRIPPED | CREDS)
    assert seen == {"content-type": ("application/json",), "accept": ("a", "b")}


def test_downstream_drops_hop_by_hop() -> None:
    out = downstream_headers(
        h(
            ("Connection", "close, X-Hop"),
            ("X-Hop", "1"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Type", "t"),
        ),
        {"X-Policy": "p"},
    )
    assert dict(out) == {"Content-Type": "t", "X-Policy": "p"}


names = st.sampled_from(sorted(STRIPPED))


@given(
    names, st.lists(st.sampled_from(["upper", "lower", "under", "title"]), min_size=1, max_size=4)
)
def test_any_spelling_of_a_stripped_header_never_reaches_upstream(
    name: str, styles: list[str]
) -> None:
    def spell(style: str) -> str:
        return {
            "upper": name.upper(),
            "lower": name,
            "under": name.replace("-", "_"),
            "title": name.title(),
        }[style]

    incoming = h(*[(spell(s), "spoof") for s in styles])
    out = upstream_headers(incoming, stripped=STRIPPED, credential_headers=CREDS, asserted={})
    assert all(v != "spoof" for v in out.values())
