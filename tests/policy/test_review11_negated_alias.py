"""Review of issue 11: `not f(ref)` is refused (OPA binds the reference before `not`,
so a missing one makes the negation undefined; regorus makes it true), but a reference
reached through an import alias was not recognised as one:

    import input.user.team as t
    allow if not startswith(t, "pay")

loaded, and with no `user` in the input regorus allowed where OPA (the same as
`not startswith(input.user.team, "pay")`, vectors negated_calls/team_not_pay) leaves
`allow` undefined. An import alias now counts as a reference there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import regorus

from ztproxy.policy.loader import LoadError, load

POLICY = """package t
import rego.v1
import input.user.team as t
default decision := false
decision if not startswith(t, "pay")
"""


def test_review11_negated_call_on_an_import_alias_is_refused(tmp_path: Path) -> None:
    e = regorus.Engine()
    e.add_policy("t.rego", POLICY)
    e.set_input_json(json.dumps({}))
    assert json.loads(e.eval_rule_as_json("data.t.decision")) is True  # OPA: false
    (tmp_path / "t.rego").write_text(POLICY, encoding="utf-8")
    with pytest.raises(LoadError, match=r"t\.rego:5: not: a call or `in` on a reference"):
        load([str(tmp_path)])


def test_bound_alias_still_loads(tmp_path: Path) -> None:
    (tmp_path / "t.rego").write_text(
        POLICY.replace(
            'decision if not startswith(t, "pay")',
            'decision if {\n  team := t\n  not startswith(team, "pay")\n}',
        ),
        encoding="utf-8",
    )
    load([str(tmp_path)])
