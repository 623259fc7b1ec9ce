"""Review of issue 11, found sound: what the decision cache key takes from the AST for
input reached through aliasing. Each read below must cover the field the policy really
uses (a prefix of it, or `()`: the whole input). Pins the analysis so that a change to
`checks.analyze` that narrows one of these fails here."""

from __future__ import annotations

import pytest
import regorus

from ztproxy.policy.checks import analyze

HEAD = "package t\nimport rego.v1\n"

CASES = [
    ('x if input[`request`].method == "GET"', {()}),
    ('x if input["req\\u0075est"].method == "GET"', {("request", "method")}),
    ('x if { some k, v in input.request; k == "m"; v == 1 }', {("request",)}),
    ("x if { r := input.request; r[data.k] == 1 }", {("request",)}),
    ("f(a) := a.m\nx if f(input.request) == 1", {("request",)}),
    ("x if count(object.keys(input.user)) > 1", {("user",)}),
    ("x if input.request[input.f] == 1", {("f",), ("request",)}),
    ('import input.request as r\nx if r.method == "GET"', {()}),
    ("x if { some x in input; x == 1 }", {()}),
    ('x := object.get(input, ["a", "b"], 0)', {()}),
    ('x if { r := input; r.request.method == "GET" }', {()}),
    ('x if { true with input.request.method as "GET" }', {()}),
    ("x if { y == 1 }\ny := input.b", {("b",)}),
    ("x if [input.a, input.b][0] == 1", {("a",), ("b",)}),
]


@pytest.mark.parametrize(("body", "reads"), CASES)
def test_review11_input_reads_cover_aliased_reads(body: str, reads: set[tuple[str, ...]]) -> None:
    e = regorus.Engine()
    e.add_policy("t.rego", HEAD + body + "\n")
    assert analyze(e.get_ast_as_json()).input_reads == reads
