"""What a policy can read of its input: the scan is conservative, and the cut-down input
gives the real engine the same decision as the whole one."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import regorus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policy_support import TD, device, make_input, user

from ztproxy.config.policy import PolicyConfig
from ztproxy.policy import PolicyDecider, build_decider
from ztproxy.policy.embedded import EmbeddedEngine, _evaluate
from ztproxy.policy.loader import load
from ztproxy.policy.reads import input_paths, project

SHIPPED = Path(__file__).resolve().parents[2] / "policies"
RULE = "data.ztproxy.authz.decision"


@pytest.mark.parametrize("rego,paths", [
    ("package p\nallow if input.request.method == \"GET\"",
     (("request", "method"),)),
    ("package p\nallow if input[\"request\"][\"path\"] == \"/x\"", (("request", "path"),)),
    ("package p\nallow if input.request.headers[k] == \"x\"", (("request", "headers"),)),
    ("package p\nallow if input.a.b[0].c", (("a", "b"),)),
    ("package p\nallow if { input.a.b; input.a }", (("a",),)),  # prefix-free
    ("package p\nimport input.request as r\nallow if r.method == \"GET\"", (("request",),)),
    ("package p\n# input.secret in a comment\nallow if input.x\n", (("x",),)),
    ("package p\nallow if \"input.secret\" == `input.other`\nok if input.y", (("y",),)),
    ("package p\nallow if data.input.x == input.z", (("z",),)),
    # cannot tell: the whole input counts
    ("package p\nallow if count(input) > 1", None),
    ("package p\nallow if json.marshal(input) != \"\"", None),
    ("package p\nallow if some k, _ in input", None),
    ("package p\nimport input\nallow if input.x", None),
    ("package p\nallow if f with input as {}", None),
    ("package p\nallow if f with input.x as 1\nf if input.y", None),
    ("package p\nallow if $\"{input.x}\" == \"a\"", None),
    ("package p\nallow if \"unterminated", None),
])
def test_scan(rego: str, paths: tuple[tuple[str, ...], ...] | None) -> None:
    assert input_paths([rego]) == paths


def test_shipped_policy_reads() -> None:
    modules = [p.read_text() for p in SHIPPED.rglob("*.rego") if not p.name.endswith(
        "_test.rego")]
    assert input_paths(modules) == (
        ("destination", "service"), ("device",), ("request", "method"), ("request", "path"),
        ("source", "spiffe_id"), ("user",), ("version",))


def test_project_keeps_only_the_paths_and_the_shape() -> None:
    doc = {"a": {"b": 1, "c": 2}, "n": None, "l": [1], "z": 3}
    paths = (("a", "b"), ("missing", "x"), ("n", "deep"), ("l", "x"))
    assert project(doc, paths) == {"a": {"b": 1}, "n": None, "l": [1]}


# -- soundness with the real engine: the decision on the cut-down input is the decision ---
# Inputs shaped like the proxy's, with every field the shipped policy reads varied, and
# the ones it does not read (query, headers, id, time, certificate) varied too.
_word = st.sampled_from(["GET", "POST", "DELETE", "PUT", "/api/v1/charges", "/admin",
                         "/api/v1/charges/7", "/reports/daily/1", "/reports/uploads/u",
                         "/api/v1/refunds/x", "/", "", "x"])
_roles = st.lists(st.sampled_from(["payments-operator", "payments-admin", "analyst",
                                   "viewer"]), max_size=3)
_principal = st.one_of(st.none(), st.fixed_dictionaries({
    "issuer": st.just("https://idp"), "subject": st.just("s"),
    "id": st.just("d1"), "bound_to_client_cert": st.booleans(),
    "claims": st.fixed_dictionaries({}, optional={
        "roles": _roles, "trust_level": st.integers(0, 5) | st.just("high"),
        "managed": st.booleans() | st.just("yes")})}))
_sources = st.sampled_from([f"{TD}/prod/sa/{w}" for w in ("checkout", "reports", "batch",
                                                          "payments", "intruder")])
docs = st.fixed_dictionaries({
    "version": st.sampled_from([1, 2]),
    "request": st.fixed_dictionaries({
        "id": st.text(max_size=4), "method": _word, "path": _word,
        "query": st.dictionaries(st.text(max_size=3), st.lists(st.text(max_size=3))),
        "headers": st.dictionaries(st.text(max_size=5), st.lists(st.text(max_size=3))),
        "time": st.text(max_size=5)}),
    "source": st.fixed_dictionaries({"spiffe_id": _sources, "address": st.just("1.2.3.4")}),
    "destination": st.fixed_dictionaries({"service": st.sampled_from(
        ["payments", "reports", "nope"])}),
    "user": _principal, "device": _principal})


@pytest.fixture(scope="module")
def shipped_engine() -> regorus.Engine:
    return load([str(SHIPPED)]).engine


@given(docs)
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_cut_down_input_gives_the_same_decision(shipped_engine: regorus.Engine,
                                                 doc: dict[str, Any]) -> None:
    modules = [p.read_text() for p in SHIPPED.rglob("*.rego") if not p.name.endswith(
        "_test.rego")]
    paths = input_paths(modules)
    assert paths is not None
    whole = _evaluate(shipped_engine, RULE, doc)
    cut = _evaluate(shipped_engine, RULE, project(doc, paths))
    assert json.dumps(getattr(whole, "value", whole), sort_keys=True) == \
        json.dumps(getattr(cut, "value", cut), sort_keys=True)


# -- through the decider ----------------------------------------------------------------
PATH = "ztproxy/authz/decision"
READS_QUERY_AND_TIME = """package ztproxy.authz

import rego.v1

decision := {"allowed": true, "reasons": []} if {
\tinput.request.query.limit == ["10"]
\tinput.request.time != ""
}

default decision := {"allowed": false, "reasons": ["no"], "http_status": 403}
"""


@pytest.fixture
async def reader(tmp_path: Path) -> AsyncIterator[PolicyDecider]:
    (tmp_path / "p.rego").write_text(READS_QUERY_AND_TIME)
    d = build_decider(PolicyConfig(policy_dirs=(str(tmp_path),), watch=False))
    assert isinstance(d, PolicyDecider)
    await d.start()
    yield d
    await d.close()


async def test_what_the_policy_reads_is_in_the_key(reader: PolicyDecider) -> None:
    engine = reader.engine
    assert isinstance(engine, EmbeddedEngine)
    assert engine.input_paths == (("request", "query", "limit"), ("request", "time"))
    from datetime import UTC, datetime
    t1, t2 = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 1,
                                                                  tzinfo=UTC)
    first = await reader.decide(PATH, make_input(query={"limit": ("10",)}, when=t1))
    assert first.allowed and not first.cached
    # another id, user and device: not read, so the same decision
    same = await reader.decide(PATH, make_input(query={"limit": ("10",)}, when=t1,
                                                request_id="r2",
                                                the_user=user(subject="eve"),
                                                the_device=device(trust_level=1)))
    assert same.cached
    # the time is read: the next second is evaluated again, never answered from before
    later = await reader.decide(PATH, make_input(query={"limit": ("10",)}, when=t2))
    assert not later.cached and later.allowed
    other = await reader.decide(PATH, make_input(query={"limit": ("20",)}, when=t1))
    assert not other.cached and not other.allowed


def test_view_keys_are_bytes_when_short_and_a_digest_when_long() -> None:
    from ztproxy.policy.reads import KEY_MAX_BYTES, view_key

    short = {"request": {"method": "GET"}}
    assert view_key(short) == b'{"request":{"method":"GET"}}'
    long = {"request": {"headers": {"x": ["a" * KEY_MAX_BYTES]}}}
    key = view_key(long)
    assert key.startswith(b"sha256:") and len(key) == 7 + 32
    assert view_key({"n": 2**70}).startswith(b"json:")  # orjson refuses: json writes it
    assert view_key({"b": 1, "a": 2}) == view_key({"a": 2, "b": 1})


def test_project_keeps_a_whole_subtree_over_a_path_below_it() -> None:
    doc = {"a": {"b": 1, "c": 2}}
    assert project(doc, (("a", "b"), ("a",))) == doc
    assert project(doc, (("a",), ("a", "b"))) == doc
