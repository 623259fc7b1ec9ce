"""Issue 11: `count` of a string. regorus counts UTF-16 code units where OPA 0.61 counts
code points, so a character beyond U+FFFF counts twice: `count("a😀")` is 3 in regorus
and 2 in OPA, and `allow if count(input.user.claims.name) > 2` allows where OPA denies.
Which `count` argument is a string is not known at load, so a policy that calls `count`
never meets such a character: refused in its modules and data at load, and a 503
`policy_input_unsupported_string` for an input that holds one (not an engine failure:
the breaker does not count it). A policy that never calls `count` is unaffected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import regorus
from hypothesis import given, settings
from hypothesis import strategies as st
from policy_support import outcome, started_decider

from ztproxy.policy.checks import ASTRAL, holds_astral
from ztproxy.policy.decider import PolicyDecider
from ztproxy.policy.loader import LoadError, load
from ztproxy.policy.prepared import PreparedInput

HEAD = "package t\nimport rego.v1\n"
LONG_NAME = HEAD + "default decision := false\ndecision if count(input.name) > 2\n"
NO_COUNT = HEAD + 'default decision := false\ndecision if startswith(input.name, "a")\n'
EMOJI = "a\U0001f600"


def test_regorus_counts_a_string_in_utf16_units() -> None:
    """The difference this file guards against (if regorus changes, revisit the guard)."""
    e = regorus.Engine()
    e.add_policy("t.rego", HEAD + "c := count(input.s)\n")
    e.set_input_json(json.dumps({"s": EMOJI}))
    assert json.loads(e.eval_rule_as_json("data.t.c")) == 3  # OPA: 2


def _write(tmp_path: Path, text: str, data: Any = None) -> Path:
    (tmp_path / "t.rego").write_text(text, encoding="utf-8")
    if data is not None:
        (tmp_path / "data.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("literal", [EMOJI, "a\\ud83d\\ude00"])
def test_astral_literal_in_a_policy_that_counts_is_refused(tmp_path: Path, literal: str) -> None:
    with pytest.raises(LoadError, match=r"t\.rego:5: a character beyond U\+FFFF"):
        load([str(_write(tmp_path, LONG_NAME + f'x := "{literal}"\n'))])


def test_astral_data_in_a_policy_that_counts_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="data: a string holds a character beyond"):
        load([str(_write(tmp_path, LONG_NAME, {"names": [EMOJI]}))])


def test_policy_without_count_loads_astral_text(tmp_path: Path) -> None:
    load([str(_write(tmp_path, NO_COUNT + f'x := "{EMOJI}"\n', {"names": [EMOJI]}))])


async def _decider(policy_dir: Path) -> PolicyDecider:
    return await started_decider(policy_dir)  # type: ignore[no-any-return]


async def _outcome(d: PolicyDecider, doc: Any) -> str:
    return await outcome(d, doc, with_reason=False)


async def test_astral_input_is_a_503_where_the_policy_counts(tmp_path: Path) -> None:
    d = await _decider(_write(tmp_path, LONG_NAME))
    try:
        for doc in (
            {"name": EMOJI},
            PreparedInput({"name": EMOJI}),
            {"name": "ab", "other": ["x", EMOJI]},
        ):
            # OPA: count is 2, deny; regorus alone would say 3, allow
            assert await _outcome(d, doc) == "503:policy_input_unsupported_string"
        assert await _outcome(d, {"name": "ab"}) == "deny"
        assert await _outcome(d, {"name": "é\u00e9\u4e2d"}) == "allow"  # BMP: same count
    finally:
        await d.close()  # type: ignore[attr-defined]


async def test_astral_input_decides_where_the_policy_does_not_count(tmp_path: Path) -> None:
    d = await _decider(_write(tmp_path, NO_COUNT))
    try:
        assert await _outcome(d, {"name": EMOJI}) == "allow"
    finally:
        await d.close()  # type: ignore[attr-defined]


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=8),
            st.sampled_from(["\\u", "\\ud83d", "\\uDE00", "\\\\ud83d", EMOJI, "\\u00e9", "é"]),
        ),
        max_size=6,
    ).map("".join)
)
def test_the_ascii_shortcut_answers_as_the_regex(text: str) -> None:
    """holds_astral skips the regex for ASCII text without `\\u`: same answer always."""
    assert holds_astral(text) == (ASTRAL.search(text) is not None)
    assert holds_astral(json.dumps(text)) == (ASTRAL.search(json.dumps(text)) is not None)
