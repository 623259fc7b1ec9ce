"""Review of issue 11: base64.decode / base64.is_valid / base64url.decode. OPA 0.61 uses
Go's encoding/base64 (StdEncoding, not Strict): newlines are skipped, trailing bits
need not be zero, and data after the padding is "illegal base64 data". regorus uses the
Rust `base64` crate, which refuses newlines and non-zero trailing bits, and accepts a
padded quantum followed by more (`"b2s=b2s="` decodes to "okok"). The vectors pin OPA's
side for newlines (base64/decoded: 'aGVsbG8=\\n' is "hello"), so base64.is_valid of it
is true in OPA and false here. Fail-open shapes:

- `deny if { t := input.t; base64.is_valid(t) }` (a raw-credential detector) with
  t = "aGVsbG8=\\n": OPA denies, regorus does not;
- `allow if base64url.decode(t) == "okok"` with t = "b2s=b2s=": OPA: an error, so
  undefined, denied; regorus: allowed.

All three are now refused at load (the encoders agree and stay)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import regorus

from ztproxy.policy.loader import LoadError, load

HEAD = "package t\nimport rego.v1\n"
VALID_DENY = (
    HEAD
    + """default decision := false
deny if {
  t := input.t
  base64.is_valid(t)
}
decision if not deny
"""
)
DECODE_ALLOW = (
    HEAD
    + """default decision := false
decision if {
  t := input.t
  base64url.decode(t) == "okok"
}
"""
)
STD_DECODE_ALLOW = DECODE_ALLOW.replace("base64url.decode", "base64.decode")


def _regorus(policy: str, t: str) -> object:
    e = regorus.Engine()
    e.add_policy("t.rego", policy)
    e.set_input_json(json.dumps({"t": t}))
    return json.loads(e.eval_rule_as_json("data.t.decision"))


@pytest.mark.parametrize(
    ("policy", "t"),
    [(VALID_DENY, "aGVsbG8=\n"), (DECODE_ALLOW, "b2s=b2s="), (STD_DECODE_ALLOW, "b2s=b2s=")],
)
def test_review11_base64_policy_that_regorus_allows_and_opa_denies_is_refused(
    tmp_path: Path, policy: str, t: str
) -> None:
    assert _regorus(policy, t) is True  # OPA 0.61: false (see the module doc)
    (tmp_path / "t.rego").write_text(policy, encoding="utf-8")
    with pytest.raises(LoadError, match=r"t\.rego:\d+: builtin base64(url)?\.(is_valid|decode)"):
        load([str(tmp_path)])


def test_review11_base64_encoders_still_load(tmp_path: Path) -> None:
    (tmp_path / "t.rego").write_text(
        HEAD + "default decision := false\n"
        'decision if base64.encode("ok") == base64url.encode("ok")\n',
        encoding="utf-8",
    )
    load([str(tmp_path)])


def test_opa_vector_pins_newline_skipped_by_opa() -> None:
    root = Path(__file__).resolve().parents[3] / "shared" / "opa-vectors"
    cases = Path(os.environ.get("ZTPROXY_OPA_VECTORS", root)) / "base64" / "cases.jsonl"
    if not cases.exists():
        pytest.skip("no OPA vectors here")
    rows = [json.loads(line) for line in cases.read_text(encoding="utf-8").splitlines()]
    assert any(
        r["id"].startswith("base64/decoded/")
        and r.get("input", {}).get("s") == "aGVsbG8=\n"
        and r["expect"] == {"value": "hello"}
        for r in rows
    )
