"""Review of issue 11: allowlisted builtins where regorus answers differently from OPA
0.61, found after the merge.

- regex.replace / regex.find_n / regex.split: regorus uses Rust's `regex`, whose `\\w`,
  `\\d` and `\\s` are Unicode classes; OPA uses Go's RE2, where they are ASCII only.
  `regex.match` was already refused for this reason; its siblings were not, so
  `deny if count(regex.find_n(`[^\\w]`, input.user, -1)) > 0` denied "josé" in OPA and
  allowed it here.
- urlquery.encode / urlquery.encode_object: regorus escapes like WHATWG form encoding
  (`*` kept, `~` escaped as %7E), OPA like Go's url.QueryEscape (`*` escaped as %2A,
  `~` kept), so an equality on the encoded text differs.

Each is now refused at load; the regorus answers are pinned so that a regorus upgrade
that changes them is noticed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import regorus

from ztproxy.policy.loader import LoadError, load

HEAD = "package t\nimport rego.v1\n"


def _regorus(expr: str) -> object:
    e = regorus.Engine()
    e.add_policy("t.rego", HEAD + f"x := {expr}\n")
    return json.loads(e.eval_rule_as_json("data.t.x"))


# (expression, regorus's answer, OPA 0.61's answer: Go RE2 / net/url)
DIFFERENCES = [
    ('regex.replace("é٣", `\\w`, "x")', "xx", "é٣"),
    ('regex.find_n(`\\d`, "a٣1", -1)', ["٣", "1"], ["1"]),
    ('regex.split(`\\s`, "a\\u00a0b")', ["a", "b"], ["a\u00a0b"]),
    ('urlquery.encode("*~")', "*%7E", "%2A~"),
    ('urlquery.encode_object({"a": "*~"})', "a=*%7E", "a=%2A~"),
]


@pytest.mark.parametrize(("expr", "ours", "opa"), DIFFERENCES)
def test_regorus_differs_from_opa_on(expr: str, ours: object, opa: object) -> None:
    assert _regorus(expr) == ours != opa


@pytest.mark.parametrize(
    "name",
    ["regex.replace", "regex.find_n", "regex.split", "urlquery.encode", "urlquery.encode_object"],
)
def test_review11_builtin_that_differs_from_opa_is_refused(tmp_path: Path, name: str) -> None:
    args = {
        "regex.replace": 'input.user, `\\w`, ""',
        "regex.find_n": "`[^\\w]`, input.user, -1",
        "regex.split": "`\\s`, input.user",
        "urlquery.encode": "input.user",
        "urlquery.encode_object": '{"u": input.user}',
    }[name]
    (tmp_path / "t.rego").write_text(
        HEAD + f'default decision := false\ndecision if {{\n  v := {name}({args})\n  v == ""\n}}\n',
        encoding="utf-8",
    )
    with pytest.raises(LoadError, match=rf"t\.rego:5: builtin {name}: "):
        load([str(tmp_path)])


def test_review11_unicode_class_deny_rule_is_refused(tmp_path: Path) -> None:
    """The end-to-end shape: OPA denies "josé" (é is not ASCII \\w); regorus allowed."""
    (tmp_path / "t.rego").write_text(
        HEAD + "default decision := false\n"
        "deny if count(regex.find_n(`[^\\w]`, input.user, -1)) > 0\n"
        "decision if not deny\n",
        encoding="utf-8",
    )
    e = regorus.Engine()
    e.add_policy("t.rego", (tmp_path / "t.rego").read_text(encoding="utf-8"))
    e.set_input_json(json.dumps({"user": "josé"}))
    assert json.loads(e.eval_rule_as_json("data.t.decision")) is True  # OPA: false
    with pytest.raises(LoadError, match=r"builtin regex\.find_n"):
        load([str(tmp_path)])
