"""Issue 11: each fail-open path found against OPA 0.61, replayed by name.

Every test here allowed (or answered differently by history) on the old head (249e017):
the VM deciding alone, a data file replacing the decision rule, builtins regorus lacks
loading silently, the hand-written reads scan cutting the input, OPA answers with
duplicate members read last-wins, 403-vs-503 by history, a set of arrays in a result,
and YAML dates at start and on hot reload.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from policy_standin import StandInOpa
from policy_support import SHIPPED, TD, make_input

from ztproxy.config.policy import PolicyConfig
from ztproxy.errors import ConfigError, ServiceUnavailable
from ztproxy.policy import build_decider
from ztproxy.policy.decider import PolicyDecider
from ztproxy.policy.loader import LoadError, load

PATH = "ztproxy/authz/decision"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


async def _decider(
    policy_dir: Path,
    *,
    cache_ms: int = 0,
    path: str = "t/decision",
    data_dirs: tuple[str, ...] = (),
    watch_ms: int | None = None,
) -> PolicyDecider:
    cfg = PolicyConfig(
        policy_dirs=(str(policy_dir),),
        data_dirs=data_dirs,
        decision_path=path,
        cache_ttl_ms=cache_ms,
        watch=watch_ms is not None,
        watch_interval_ms=watch_ms or 2000,
    )
    d = build_decider(cfg, clock=FakeClock())
    await d.start()  # type: ignore[attr-defined]
    assert isinstance(d, PolicyDecider)
    return d


async def _outcome(d: PolicyDecider, doc: dict[str, Any], path: str = "t/decision") -> str:
    try:
        decision = await d.decide(path, doc)
    except ServiceUnavailable as exc:
        return f"503:{exc.reason}"
    return "allow" if decision.allowed else f"deny:{decision.reason}"


# 1. The compiled VM decided alone after 32 checked decisions -----------------------------

REF_HEAD = """package t
import rego.v1

s.a.b := true

deny if not s[input.k].b

default decision := false

decision if not deny
"""

# The same decision with the lookup bound positively first: accepted at load.
REF_HEAD_BOUND = """package t
import rego.v1

s.a.b := true

found if {
	some k, v in s
	k == input.k
	v.b == true
}

deny if not found

default decision := false

decision if not deny
"""


def test_vm_ref_head_rule_under_not_is_refused_at_load(tmp_path: Path) -> None:
    # regorus (VM and interpreter) and OPA disagree on `not` of a ref-head rule read
    # with a dynamic key: the construct is refused, with its line, in one line
    _write(tmp_path, {"t.rego": REF_HEAD})
    with pytest.raises(LoadError) as info:
        load([str(tmp_path)], decision_paths=["t/decision"])
    assert "t.rego:6: not: a rule read with a dynamic key" in str(info.value)


async def test_vm_ref_head_rule_after_32_decisions_never_allows_what_opa_denies(
    tmp_path: Path,
) -> None:
    d = await _decider(_write(tmp_path, {"t.rego": REF_HEAD_BOUND}))
    try:
        for _ in range(40):  # past the old VM's 32 checked decisions
            assert await _outcome(d, {"k": "a"}) == "allow"
        for _ in range(40):  # OPA: no s["z"], `found` undefined, deny, no allow
            assert await _outcome(d, {"k": "z"}) == "deny:policy_deny"
        assert (await d.decide("t/decision", {"k": "z"})).engine == "embedded-regorus"
    finally:
        await d.close()


# 2. A data file replaced the decision rule -----------------------------------------------


async def test_data_json_replacing_the_decision_rule_is_refused_at_start(tmp_path: Path) -> None:
    root = tmp_path / "policies"
    shutil.copytree(SHIPPED, root)
    _write(root, {"ztproxy/authz/data.json": json.dumps({"decision": {"allowed": True}})})
    with pytest.raises(ConfigError) as info:
        await _decider(root, path=PATH)
    text = str(info.value)
    assert "conflicts with a data document" in text and "authz.rego" in text
    assert "\n" not in text


async def test_data_json_replacing_the_decision_rule_is_refused_on_reload(tmp_path: Path) -> None:
    root = tmp_path / "policies"
    shutil.copytree(SHIPPED, root)
    d = await _decider(root, path=PATH)
    intruder = make_input(source=f"{TD}/prod/sa/intruder")
    try:
        before = d.revision
        assert not (await d.decide(PATH, intruder)).allowed
        _write(root, {"ztproxy/authz/data.json": json.dumps({"decision": {"allowed": True}})})
        assert await d.reload() is False
        assert d.revision == before
        assert not (await d.decide(PATH, intruder)).allowed
        assert d.readiness()["policy_loaded"]
    finally:
        await d.close()


# 3. Builtins regorus lacks loaded silently -----------------------------------------------


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (
            'http.send({"method": "GET", "url": "https://blocklist.internal/x"}).body.blocked',
            "http.send",
        ),
        ("rego.metadata.rule().title", "rego.metadata.rule"),
        ('strings.render_template("{{.x}}", {"x": 1}) == "1"', "strings.render_template"),
        ('strings.count("aa", "a") > 1', "strings.count"),
    ],
)
def test_builtin_the_engine_cannot_evaluate_as_opa_is_refused_at_load(
    tmp_path: Path, call: str, name: str
) -> None:
    _write(
        tmp_path,
        {
            "t.rego": f"""package t
import rego.v1

blocked if {call}

default decision := false

decision if not blocked
"""
        },
    )
    with pytest.raises(LoadError) as info:
        load([str(tmp_path)], decision_paths=["t/decision"])
    text = str(info.value)
    assert f"t.rego:4: builtin {name}:" in text and "\n" not in text


def test_typo_in_decision_path_is_refused_at_load() -> None:
    with pytest.raises(LoadError, match="no rule defines data.ztproxy.authz.decisoin"):
        load([str(SHIPPED)], decision_paths=["ztproxy/authz/decisoin"])


# 4. The reads scan misread valid Rego and cut the input -------------------------------------

NEWLINE = """package t
import rego.v1

default decision := false

decision if {
	x := input.request
	["GET"]
	x.method == "GET"
}
"""

SURROGATE = """package t
import rego.v1

deny if input.request["\\ud83d\\udd11"] == "revoked"

default decision := false

decision if {
	input.request.method == "GET"
	not deny
}
"""


@pytest.mark.parametrize("rego", [NEWLINE, SURROGATE], ids=["newline", "surrogate_pair"])
async def test_reads_scan_constructs_get_the_whole_input_and_key(tmp_path: Path, rego: str) -> None:
    d = await _decider(_write(tmp_path, {"t.rego": rego}), cache_ms=60_000)
    try:
        get = {"request": {"method": "GET", "id": "1"}}
        delete = {"request": {"method": "DELETE", "id": "2"}}
        revoked = {"request": {"method": "GET", "id": "3", "\U0001f511": "revoked"}}
        assert await _outcome(d, get) == "allow"
        assert await _outcome(d, delete) == "deny:policy_deny"  # not the GET's entry
        assert await _outcome(d, get) == "allow"
        if rego is SURROGATE:  # the escaped pair is the key U+1F511: engine and key see it
            assert await _outcome(d, revoked) == "deny:policy_deny"
    finally:
        await d.close()


# 5. Remote OPA answers with duplicate members -------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"result": false, "result": true}',
        b'{"result": {"allowed": false, "allowed": true}}',
        b'{"result": {"allowed": true, "reasons": [], "reasons": ["x"], "allowed": false}}',
    ],
)
async def test_remote_duplicate_members_are_an_invalid_result_not_an_allow(
    standin: StandInOpa, body: bytes
) -> None:
    d = build_decider(PolicyConfig(engine="opa", opa_url=standin.url, cache_ttl_ms=0))
    await d.start()  # type: ignore[attr-defined]
    try:
        standin.mode = "raw"
        standin.raw_body = body
        decision = await d.decide(PATH, make_input())
        assert not decision.allowed
        assert decision.reason == "policy_result_invalid" and decision.http_status == 403
        assert decision.engine == "opa-rest"
    finally:
        await d.close()  # type: ignore[attr-defined]


# 6. The same request got 403 or 503 depending on history --------------------------------

BAD_VALUES = """package t
import rego.v1

default decision := false

decision if {
	startswith(input.path, "/api")
	count(input.roles) > 0
}
"""


async def test_same_request_same_answer_whatever_came_before(tmp_path: Path) -> None:
    # OPA: a builtin given a bad value is undefined (403); regorus raises (503). What
    # matters here: the same request gets the same answer whatever came before.
    bad = [
        {"path": 7, "roles": ["admin"]},
        {"path": "/api", "roles": 5},
        {"path": "/api", "roles": None},
        {"path": None, "roles": ["admin"]},
    ]
    fresh = await _decider(_write(tmp_path / "a", {"t.rego": BAD_VALUES}))
    used = await _decider(_write(tmp_path / "b", {"t.rego": BAD_VALUES}))
    try:
        first = [await _outcome(fresh, doc) for doc in bad]
        assert all(not o.startswith("allow") for o in first)
        for _ in range(50):  # history: many good decisions, then the bad ones repeatedly
            assert await _outcome(used, {"path": "/api/x", "roles": ["admin"]}) == "allow"
        for _ in range(3):
            assert [await _outcome(used, doc) for doc in bad] == first
    finally:
        await fresh.close()
        await used.close()


# 7. A set of arrays in a result; YAML dates at start and on hot reload --------------------

SET_OF_ARRAYS = """package t
import rego.v1

pairs contains [input.a, "x"] if true

pairs contains [1] if true

decision := {"allowed": false, "reasons": ["no"], "pairs": pairs}

whole := pairs
"""


async def test_set_of_arrays_in_a_result_is_answered_not_a_crash(tmp_path: Path) -> None:
    d = await _decider(_write(tmp_path, {"t.rego": SET_OF_ARRAYS}))
    try:
        assert await _outcome(d, {"a": "q"}) == "deny:policy_deny"
        assert await _outcome(d, {"a": "q"}, "t/whole") == "deny:policy_result_invalid"
    finally:
        await d.close()


YAML_POLICY = """package t
import rego.v1

default decision := false

decision if data.t.cfg.opens == "2026-01-01"
"""


async def test_unquoted_yaml_date_at_start_is_read_as_opa_reads_it(tmp_path: Path) -> None:
    root = _write(tmp_path, {"t.rego": YAML_POLICY, "t/data.yaml": "cfg:\n  opens: 2026-01-01\n"})
    d = await _decider(root)
    try:
        assert await _outcome(d, {}) == "allow"  # OPA keeps the date as its text
    finally:
        await d.close()


async def test_bad_yaml_on_hot_reload_keeps_the_policy_and_the_watcher(tmp_path: Path) -> None:
    root = _write(tmp_path, {"t.rego": YAML_POLICY, "t/data.yaml": "cfg:\n  opens: 2026-01-01\n"})
    d = await _decider(root, watch_ms=50)
    try:
        revision = d.revision
        (root / "t" / "data.yaml").write_text("cfg:\n  opens: 2026-01-01\n  x: [1\n")
        await _until(lambda: d.stats()["policy_reloads_failed"] >= 1)
        assert d.revision == revision and d.readiness()["policy_loaded"]
        assert await _outcome(d, {}) == "allow"
        (root / "t" / "data.yaml").write_text("cfg:\n  opens: 2027-01-01\n  d: 2026-02-03\n")
        await _until(lambda: d.revision != revision)  # the watcher is still alive
        assert await _outcome(d, {}) == "deny:policy_deny"
    finally:
        await d.close()


async def _until(cond: Any, limit_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not cond():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


# Numbers the embedded engine would round ----------------------------------------------

BIG = """package t
import rego.v1

default decision := false

decision if input.n > 9007199254740991
"""


async def test_input_integer_past_2_53_is_refused_not_rounded(tmp_path: Path) -> None:
    from ztproxy.policy.prepared import PreparedInput

    d = await _decider(_write(tmp_path, {"t.rego": BIG}))
    try:
        for doc in (
            {"n": 2**53 + 1},
            PreparedInput({"n": 2**53 + 1}, no_floats=True),
            {"n": [1, {"m": -(2**64)}]},
        ):
            assert await _outcome(d, doc) == "503:policy_input_unsupported_number"
        assert (
            await _outcome(d, PreparedInput({"n": 2**53 - 1}, no_floats=True)) == "deny:policy_deny"
        )
    finally:
        await d.close()
