"""Issue 13, finding 1: percent-encoded unreserved characters are decoded (and other
escapes upper-cased) before routing and policy, and the memo is bounded by bytes.

`/payments/%61dmin/users` used to skip a route written for `/payments/admin`;
`/payments/%66orbidden/x` used to pass a `startswith(path, "/payments/forbidden")` rule.
"""

from __future__ import annotations

import gc
import re
import string
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ztproxy.errors import BadRequest
from ztproxy.model import Requirement, Route
from ztproxy.stages import canonical
from ztproxy.stages.canonical import canonicalize
from ztproxy.stages.request import match_route

_UNRESERVED = string.ascii_letters + string.digits + "-._~"
_UNRESERVED_ESCAPE = re.compile("|".join(f"%{ord(c):02x}" for c in _UNRESERVED), re.IGNORECASE)


@pytest.mark.parametrize(
    "target,expected",
    [
        ("/payments/%61dmin/users", "/payments/admin/users"),
        ("/payments/%66orbidden/x", "/payments/forbidden/x"),
        ("/%41%5a%7e%2d%5f%30", "/AZ~-_0"),
        ("/a%20b", "/a%20B".replace("B", "b")),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/x%3fy", "/x%3Fy"),
        ("/x?q=%61%2f%2e%3b", "/x?q=a%2F.%3B"),
    ],
)
def test_unreserved_escapes_decoded_others_upper_cased(target: str, expected: str) -> None:
    assert canonicalize(target).target == expected


@pytest.mark.parametrize(
    "target,reason",
    [
        ("/a/%2e%2e/admin", "encoded_dot"),
        ("/payments/admin%3bx", "path_parameter"),  # a decoding backend strips ";x": /admin
        ("/payments/admin%3B", "path_parameter"),
        ("/a/%2E/admin", "encoded_dot"),
        ("/a%2fb", "encoded_separator"),
        ("/a%5Cb", "encoded_separator"),
        ("/a%252e", "encoded_percent"),
        ("/a%00", "control_byte"),
        ("/a?x=%0d%0a", "control_byte"),
        ("/a%6", "bad_percent_encoding"),
        ("/a%ff", "bad_percent_encoding"),
    ],
)
def test_still_refused(target: str, reason: str) -> None:
    with pytest.raises(BadRequest) as err:
        canonicalize(target)
    assert err.value.reason == reason


def _route(name: str, prefix: str) -> Route:
    return Route(
        name=name,
        service="payments",
        upstream="http://127.0.0.1:1",
        path_prefix=prefix,
        user=Requirement.NONE,
        device=Requirement.NONE,
    )


def test_encoded_unreserved_selects_the_route_of_its_decoded_form() -> None:
    routes = [_route("admin", "/payments/admin"), _route("open", "/payments")]
    path = canonicalize("/payments/%61dmin/users").path
    assert match_route(routes, "h", path).name == "admin"


_alphabet = string.ascii_letters + string.digits + "-._~!$&'()*+,=:@/?"
_escapes = st.integers(0, 255).map(lambda b: f"%{b:02x}") | st.integers(0, 255).map(
    lambda b: f"%{b:02X}"
)
_pieces = st.lists(st.text(alphabet=_alphabet, max_size=4) | _escapes, max_size=12)


@given(_pieces)
@settings(max_examples=800)
def test_normalization_properties(pieces: list[str]) -> None:
    target = "/" + "".join(pieces)
    try:
        c = canonicalize(target)
    except BadRequest:
        return
    # idempotent: the canonical form is a fixed point, and its answer is the same
    assert canonicalize(c.target) == c
    # no escape of an unreserved character survives, and every escape is upper case
    assert not _UNRESERVED_ESCAPE.search(c.target)
    assert all(e == e.upper() for e in re.findall(r"%..", c.target))
    # the path routed on is the path the policy sees is the path forwarded
    routes = [_route("r", "/")]
    assert match_route(routes, "h", c.path).name == "r"
    assert c.target.partition("?")[0] == c.path


@given(_pieces)
@settings(max_examples=300)
def test_memo_gives_exactly_the_slow_answer(pieces: list[str]) -> None:
    target = "/" + "".join(pieces)

    def outcome(fn):  # type: ignore[no-untyped-def]
        try:
            return fn(target)
        except BadRequest as exc:
            return exc.reason

    fresh = outcome(canonical._canonicalize)
    assert outcome(canonicalize) == fresh
    assert outcome(canonicalize) == fresh


@pytest.mark.parametrize(
    "shape",
    [
        "/{i}?" + "&".join(str(j) for j in range(170))[:500],  # many query fields
        "/{i}" + "/a" * 250,  # many segments
        "/{i}" + "/%C3%A9" * 70,  # many escapes
        "/api/v1/charges/{i}?limit=10",  # the common shape
    ],
)
def test_memo_bounded_by_bytes_under_crafted_targets(shape: str) -> None:
    """The old memo held ~75 MiB after 4096 crafted 512-byte targets (many query
    fields each); now its estimate stays within MEMO_MAX_BYTES and it really holds no
    more than its estimate."""
    canonical.memo_clear()
    one = canonical.memo_cost(shape, canonical._canonicalize(shape.replace("{i}", "0")))
    crafted = [shape.replace("{i}", str(i)) for i in range(3 * canonical.MEMO_MAX_BYTES // one)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for target in crafted:
        canonicalize(target)
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    entries, estimate = canonical.memo_size()
    assert 0 < entries < len(crafted)  # the budget was reached and the memo emptied
    assert estimate <= canonical.MEMO_MAX_BYTES
    assert peak <= canonical.MEMO_MAX_BYTES + 256 * 1024, peak
    canonical.memo_clear()
