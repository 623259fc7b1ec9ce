"""Duplicate YAML keys are errors naming their key path (issue 15: `user: none` written
below `user: required` silently won, and check-config passed)."""

from __future__ import annotations

import pytest
import yaml

from ztproxy.config.reader import read_yaml
from ztproxy.errors import ConfigError


def test_same_result_as_safe_load_without_duplicates() -> None:
    text = "a: 1\nb: [x, {c: 2, d: null}]\ne: &anchor {f: 1}\ng:\n  <<: *anchor\n  h: 2\n"
    assert read_yaml(text) == yaml.safe_load(text)
    assert read_yaml("") is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("user: required\nuser: none\n", "user: duplicate key (line 2; first at line 1)"),
        (
            "routes:\n  - name: a\n    user: required\n    user: none\n",
            "routes[0].user: duplicate key (line 4; first at line 3)",
        ),
        ("a:\n  b:\n    c: 1\n    c: 2\n", "a.b.c: duplicate key (line 4; first at line 3)"),
    ],
)
def test_duplicate_key_names_its_path(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as exc:
        read_yaml(text)
    assert exc.value.problems == (f"{problem}; give each key once",)


def test_every_duplicate_is_listed() -> None:
    with pytest.raises(ConfigError) as exc:
        read_yaml("a: 1\na: 2\nb: {c: 1, c: 2}\n")
    assert [p.split(":")[0] for p in exc.value.problems] == ["a", "b.c"]


def test_yaml_tags_stay_safe() -> None:
    with pytest.raises(yaml.YAMLError):
        read_yaml("a: !!python/object/apply:os.system ['true']\n")
