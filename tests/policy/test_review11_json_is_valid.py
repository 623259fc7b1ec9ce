"""Review of issue 11: json.is_valid. OPA 0.61 uses Go's json.Valid (syntax only: "1e400"
and a lone surrogate escape "\\ud800" are valid); regorus parses with serde_json, which
refuses a number out of f64 range and a lone surrogate. The vectors pin OPA's side
(urlquery_json/json_valid: "1e400" is true); that policy is refused at load for other
builtins, so the vector run never compared this one. Fail-open shape: a deny rule that
fires on text that is JSON (`deny if { b := input.body; json.is_valid(b) }`): OPA denies
"1e400", regorus does not. Now refused at load."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import regorus

from ztproxy.policy.loader import LoadError, load

POLICY = """package t
import rego.v1
default decision := false
deny if {
  b := input.body
  json.is_valid(b)
}
decision if not deny
"""


@pytest.mark.parametrize("body", ["1e400", '"\\ud800"'])
def test_review11_json_is_valid_deny_that_regorus_skips_is_refused(
    tmp_path: Path, body: str
) -> None:
    e = regorus.Engine()
    e.add_policy("t.rego", POLICY)
    e.set_input_json(json.dumps({"body": body}))
    assert json.loads(e.eval_rule_as_json("data.t.decision")) is True  # OPA: false
    (tmp_path / "t.rego").write_text(POLICY, encoding="utf-8")
    with pytest.raises(LoadError, match=r"t\.rego:6: builtin json\.is_valid"):
        load([str(tmp_path)])


def test_opa_vector_pins_1e400_as_valid_json_in_opa() -> None:
    root = Path(__file__).resolve().parents[3] / "shared" / "opa-vectors"
    cases = Path(os.environ.get("ZTPROXY_OPA_VECTORS", root)) / "urlquery_json" / "cases.jsonl"
    if not cases.exists():
        pytest.skip("no OPA vectors here")
    rows = [json.loads(line) for line in cases.read_text(encoding="utf-8").splitlines()]
    assert any(
        r["id"].startswith("urlquery_json/json_valid/")
        and r.get("input", {}).get("s") == "1e400"
        and r["expect"] == {"value": True}
        for r in rows
    )
