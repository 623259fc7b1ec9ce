"""Review of issue 11: the builtin allowlist was skipped for any call whose first name
segment is a rule of the module or an import alias. regorus still calls the BUILTIN
when no rule defines the full name, so a rule `regex.x := 1` (or `time.x`, `sum.x`, or
`import data.nothing as regex`) let `regex.match`, `time.now_ns`, `sum`... load. Also
regorus gives an import's `as` as a span, so the alias name was never read (the
last segment of the path was taken instead). Now a call through a local name, an alias
or `data` is a user function only when some module defines exactly that path;
otherwise it is checked as a builtin. Real user functions (local, through an alias,
under `data.`) still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import regorus

from ztproxy.policy.loader import LoadError, load

HEAD = "package t\nimport rego.v1\n"

BYPASSES = {
    "namespace_rule": HEAD + "regex.x := 1\ndecision if regex.match(`^\\w+$`, input.user)\n",
    "alias_to_nothing": HEAD + "import data.nothing as regex\n"
    "decision if regex.match(`^\\w+$`, input.user)\n",
    "time_namespace": HEAD + "time.x := 1\ndecision if time.now_ns() > 0\n",
}
COUNT_NAMESPACE = HEAD + "count.x := 1\ndecision if count(input.user) > 2\n"


def test_regorus_calls_the_builtin_beside_a_namespace_rule() -> None:
    e = regorus.Engine()
    e.add_policy("t.rego", BYPASSES["namespace_rule"])
    e.set_input_json(json.dumps({"user": "josé"}))
    assert json.loads(e.eval_rule_as_json("data.t.decision")) is True  # OPA: \w is ASCII


@pytest.mark.parametrize("name", sorted(BYPASSES))
def test_review11_builtin_behind_a_local_name_or_alias_is_refused(
    tmp_path: Path, name: str
) -> None:
    (tmp_path / "t.rego").write_text(BYPASSES[name], encoding="utf-8")
    with pytest.raises(LoadError, match=r"t\.rego:\d+: builtin (regex\.match|time\.now_ns)"):
        load([str(tmp_path)])


def test_review11_count_behind_a_namespace_rule_still_guards_astral_input(tmp_path: Path) -> None:
    """`count` is allowlisted, but the astral-character guard keys on it being called."""
    (tmp_path / "t.rego").write_text(COUNT_NAMESPACE + 'y := "a\U0001f600"\n', encoding="utf-8")
    with pytest.raises(LoadError, match="character beyond U\\+FFFF"):
        load([str(tmp_path)])


def test_user_functions_still_load(tmp_path: Path) -> None:
    (tmp_path / "lib.rego").write_text(
        'package lib\nimport rego.v1\nok(u) := u == "a"\n', encoding="utf-8"
    )
    (tmp_path / "t.rego").write_text(
        HEAD + "import data.lib as helpers\nimport data.lib\n"
        'regex.mine(u) := u == "a"\n'
        "default decision := false\n"
        "decision if {\n  u := input.user\n  helpers.ok(u)\n  lib.ok(u)\n"
        "  data.lib.ok(u)\n  regex.mine(u)\n}\n",
        encoding="utf-8",
    )
    load([str(tmp_path)])
