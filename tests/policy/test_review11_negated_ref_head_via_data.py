"""Review of issue 11: `not svc[input.service].blocked` over a ref-head rule is refused
(regorus and OPA disagree there), but only when read by the rule's own name. Read as
`data.<pkg>.svc[input.service].blocked`, or through `import data.<pkg>.svc as s`, it
loaded; on the vectors' own policy (ref_heads, rule `allowed`) with `service` missing
from the input regorus said `allowed` is true where OPA 0.61 says false (cases
ref_heads/allowed/005 and /021). Now refused alike through `data.` and an alias."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import regorus

from ztproxy.policy.loader import LoadError, load

ROOT = Path(__file__).resolve().parents[3] / "shared" / "opa-vectors"
VECTORS = Path(os.environ.get("ZTPROXY_OPA_VECTORS", ROOT)) / "ref_heads"
RULE = "allowed if not svc[input.service].blocked"


def _policy() -> str:
    if not (VECTORS / "policy.rego").exists():
        pytest.skip("no OPA vectors here")
    src = (VECTORS / "policy.rego").read_text(encoding="utf-8")
    assert RULE in src
    # leave out the rules refused for another reason (a ref in a partial rule's head)
    src = re.sub(r"teams\[t\] contains member\.name if \{.*?\n\}\n", "", src, flags=re.S)
    return "\n".join(line for line in src.splitlines() if not line.startswith("team_size"))


VARIANTS = {
    "data_root": lambda s: s.replace(
        RULE, "allowed if not data.vectors.ref_heads.svc[input.service].blocked"
    ),
    "import_alias": lambda s: s.replace(
        "import rego.v1", "import rego.v1\nimport data.vectors.ref_heads.svc as s"
    ).replace(RULE, "allowed if not s[input.service].blocked"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_review11_not_of_ref_head_rule_through_data_or_alias_is_refused(
    tmp_path: Path, variant: str
) -> None:
    text = VARIANTS[variant](_policy())
    cases = [
        json.loads(line)
        for line in (VECTORS / "cases.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    case = next(c for c in cases if c["id"] == "ref_heads/allowed/005")
    assert case["expect"] == {"value": False}  # OPA 0.61
    e = regorus.Engine()
    e.add_policy("policy.rego", text)
    e.set_input_json(json.dumps(case["input"]))
    assert json.loads(e.eval_rule_as_json(case["query"])) is True  # regorus: fail open
    (tmp_path / "policy.rego").write_text(text, encoding="utf-8")
    with pytest.raises(LoadError, match=r"not: a rule read with a dynamic key"):
        load([str(tmp_path)])


def test_static_data_read_under_not_still_loads(tmp_path: Path) -> None:
    text = VARIANTS["data_root"](_policy()).replace(
        "allowed if not data.vectors.ref_heads.svc[input.service].blocked",
        "allowed if not data.vectors.ref_heads.svc.payments.blocked",
    )
    (tmp_path / "policy.rego").write_text(text, encoding="utf-8")
    load([str(tmp_path)])
