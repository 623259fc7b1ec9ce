"""Property: what the upstream receives is exactly the canonical target the request
stage reported, and the proxy refuses exactly what the stage refuses."""

from __future__ import annotations

import json
import string

from e2e_harness import Running, StartProxy, open_route, raw_exchange
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ztproxy.errors import BadRequest
from ztproxy.stages.canonical import canonicalize

_alphabet = string.ascii_letters + string.digits + "-._~!$&'()*+,=:@%/;?"
_tails = (
    st.text(alphabet=_alphabet, max_size=30)
    | st.sampled_from(
        [
            "a/../b",
            "%2e%2e/x",
            "a%2Fb",
            "a//b",
            "x;y",
            "%41%42",
            "a%20b?c=%2f",
            "?",
            "x?y?z",
            "%zz",
            "%c3%a9",
            "%25",
            "...",
            ".well-known/x",
        ]
    )
).filter(
    # the lab upstream's own routes answer differently (/ws wants an Upgrade: 400);
    # everything else reaches its echo handler
    lambda t: t.split("?")[0].split("/")[0] not in ("ws", "stream", "upload", "slow")
)

_running: dict[str, Running] = {}


@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=120, deadline=None
)
@given(tail=_tails)
async def test_upstream_sees_exactly_the_canonical_target(
    start_proxy: StartProxy, upstream: str, tail: str
) -> None:
    run = _running.get(upstream)
    if run is None:
        _running.clear()
        run = _running[upstream] = await start_proxy(routes=[open_route(upstream, path_prefix="/")])
    target = "/" + tail
    try:
        expected = canonicalize(target).target
    except BadRequest:
        expected = None
    reply = await raw_exchange(
        run.proxy.port,
        run.ctx(),
        f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode(),
    )
    head, _, body = reply.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if expected is None:
        assert status == 400, (target, head)
    else:
        assert status == 200, (target, head)
        assert json.loads(body)["raw_path"] == expected
