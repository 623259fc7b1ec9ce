"""The decision cache gives exactly the uncached decision, for adversarial policies.

The cache keys on the whole input, leaving out `request.id` / `request.time` only when
regorus's AST shows no module can read them (`checks.Facts.reads`). These policies read
them (or everything) in the ways a hand-written scan missed or cannot see: a newline
between a ref and an index, a surrogate-pair string, `walk`, `object.get(input, ...)`,
`object.filter` / `object.remove` (json.filter is refused at load), `input[_]`,
`some x in input`, `with`, functions taking `input`, plus direct reads. Hypothesis draws
sequences of inputs from a small alphabet (so entries are hit); every cached answer
must equal a fresh uncached evaluation.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ztproxy.config.policy import PolicyConfig
from ztproxy.errors import ServiceUnavailable
from ztproxy.policy import build_decider
from ztproxy.policy.decider import PolicyDecider
from ztproxy.policy.loader import load

HEAD = "package t\nimport rego.v1\n\ndefault decision := false\n\n"

POLICIES: dict[str, str] = {
    "newline_ref_index": """decision if {
	x := input.request
	["GET"]
	x.id == "7"
}
""",
    "surrogate_pair": """k := "\\ud83d\\udd11"

decision if {
	k != ""
	input.request.time == "t1"
}
""",
    "walk": """decision if {
	walk(input, [_, v])
	v == "7"
}
""",
    "object_get": 'decision if object.get(input, ["request", "id"], "") == "7"\n',
    "object_filter": 'decision if object.filter(input, ["request"]).request.time == "t1"\n',
    "object_remove": 'decision if object.remove(input, ["field"]).request.id == "7"\n',
    "input_any": 'decision if input[_].id == "7"\n',
    "some_in_input": """decision if {
	some x in input
	x.time == "t1"
}
""",
    "with_input": """inner if input.request.id == "7"

decision if inner with input.extra as 1
""",
    "function_of_input": """f(doc) := doc.request.time

decision if f(input) == "t1"
""",
    "direct_reads": 'decision if {\n\tinput.request.id == "7"\n\tinput.request.time == "t1"\n}\n',
    "dynamic_key": 'decision if input.request[input.field] == "7"\n',
    "method_only": 'decision if input.request.method == "GET"\n',
    # static reads only: the key is the values at these paths (checks.Facts.input_reads)
    "static_nested": """decision if {
	input.request.method == "GET"
	not input.user.claims.blocked
	input.user.claims.level >= 2
}
""",
    "static_subtree_and_leaf": """decision if {
	count(input.user) > 1
	input.user.claims.level == 3
}
""",
    "static_missing_vs_null": """decision if input.user.name == null

decision if input.request.method == "DELETE"
""",
}

_scalars = st.sampled_from([None, True, 1, 2, 3, "x", "GET"])
_claims = st.one_of(
    _scalars,
    st.fixed_dictionaries(
        {},
        optional={
            "blocked": st.sampled_from([True, False, None]),
            "level": st.sampled_from([1, 2, 3, "3"]),
        },
    ),
)
doc_strategy = st.fixed_dictionaries(
    {
        "request": st.one_of(
            st.fixed_dictionaries(
                {
                    "id": st.sampled_from(["1", "7"]),
                    "time": st.sampled_from(["t0", "t1"]),
                    "method": st.sampled_from(["GET", "DELETE"]),
                }
            ),
            _scalars,
            st.lists(_scalars, max_size=2),
        ),
        "field": st.sampled_from(["id", "time", "method"]),
    },
    optional={
        "user": st.one_of(
            _scalars, st.fixed_dictionaries({}, optional={"claims": _claims, "name": _scalars})
        ),
    },
)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_policy_loads_and_reads_what_it_reads(tmp_path: Path, name: str) -> None:
    (tmp_path / "t.rego").write_text(HEAD + POLICIES[name], encoding="utf-8")
    facts = load([str(tmp_path)], decision_paths=["t/decision"]).facts
    assert facts is not None
    volatile_free = not facts.reads(("request", "id")) and not facts.reads(("request", "time"))
    assert volatile_free == (name == "method_only" or name.startswith("static_"))


async def _answer(d: PolicyDecider, doc: dict[str, Any]) -> tuple[Any, ...]:
    try:
        got = await d.decide("t/decision", doc)
    except ServiceUnavailable as exc:  # an evaluation error is never cached
        return ("503", exc.reason)
    return (got.allowed, got.reason, got.reasons)


async def _run(root: Path, docs: list[dict[str, Any]]) -> None:
    cfg = PolicyConfig(
        policy_dirs=(str(root),), decision_path="t/decision", cache_ttl_ms=3_600_000, watch=False
    )
    cached = build_decider(cfg)
    uncached = build_decider(
        PolicyConfig(
            policy_dirs=(str(root),), decision_path="t/decision", cache_ttl_ms=0, watch=False
        )
    )
    assert isinstance(cached, PolicyDecider) and isinstance(uncached, PolicyDecider)
    await cached.start()
    await uncached.start()
    try:
        for doc in docs:
            a = await _answer(cached, doc)
            b = await _answer(uncached, doc)
            assert a == b, doc
    finally:
        await cached.close()
        await uncached.close()


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_cached_decision_equals_uncached(
    tmp_path_factory: pytest.TempPathFactory, name: str
) -> None:
    root = tmp_path_factory.mktemp(name)
    (root / "t.rego").write_text(HEAD + POLICIES[name], encoding="utf-8")

    @settings(
        max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(st.lists(doc_strategy, min_size=2, max_size=12))
    def check(docs: list[dict[str, Any]]) -> None:
        asyncio.run(_run(root, docs))

    check()
