"""Review of issue 11: semver.is_valid / semver.compare. OPA 0.61 parses versions with
its internal/semver (strconv.ParseInt(part, 10, 64): leading zeros accepted, int64
range), regorus with the Rust `semver` crate (leading zeros refused, u64 range). The
vectors pin OPA's side: `semver.compare("01.2.3", "1.2.3")` is 0 in OPA
(semver/cmp/008), so "01.2.3" is a valid version there. Two fail-open shapes:

- `deny if { semver.is_valid(v); semver.compare(v, "2.0.0") < 0 }` with v = "01.0.0":
  OPA: valid and older, denied; regorus: not valid, the deny never fires;
- `allow if semver.is_valid(v)` with v = "9223372036854775808.0.0" (2^63 major):
  OPA: ParseInt overflows, not valid, denied; regorus: valid, allowed.

Both builtins are now refused at load."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import regorus

from ztproxy.policy.loader import LoadError, load

HEAD = "package t\nimport rego.v1\n"
GUARDED_DENY = (
    HEAD
    + """default decision := false
deny if {
  v := input.version
  semver.is_valid(v)
  semver.compare(v, "2.0.0") < 0
}
decision if not deny
"""
)
VALID_ALLOW = (
    HEAD
    + """default decision := false
decision if {
  v := input.version
  semver.is_valid(v)
}
"""
)


def _regorus(policy: str, version: str) -> object:
    e = regorus.Engine()
    e.add_policy("t.rego", policy)
    e.set_input_json(json.dumps({"version": version}))
    return json.loads(e.eval_rule_as_json("data.t.decision"))


@pytest.mark.parametrize(
    ("policy", "version"), [(GUARDED_DENY, "01.0.0"), (VALID_ALLOW, "9223372036854775808.0.0")]
)
def test_review11_semver_policy_that_regorus_allows_and_opa_denies_is_refused(
    tmp_path: Path, policy: str, version: str
) -> None:
    assert _regorus(policy, version) is True  # OPA 0.61: false (see the module doc)
    (tmp_path / "t.rego").write_text(policy, encoding="utf-8")
    with pytest.raises(LoadError, match=r"t\.rego:\d+: builtin semver\.(is_valid|compare)"):
        load([str(tmp_path)])


def test_opa_vector_pins_leading_zero_as_valid_in_opa() -> None:
    """The OPA side of the difference, from the recorded vectors."""
    root = Path(__file__).resolve().parents[3] / "shared" / "opa-vectors"
    cases = Path(os.environ.get("ZTPROXY_OPA_VECTORS", root)) / "semver" / "cases.jsonl"
    if not cases.exists():
        pytest.skip("no OPA vectors here")
    rows = [json.loads(line) for line in cases.read_text(encoding="utf-8").splitlines()]
    row = next(r for r in rows if r["id"] == "semver/cmp/008")
    assert row["input"]["a"] == "01.2.3" and row["expect"] == {"value": 0}
