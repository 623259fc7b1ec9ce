"""The shipped policy (policies/ztproxy/authz.rego) against an independent model of what
docs/rego-authors.md says it means. The policy decides in two places: `allow` admits a
request, `deny` lists the reasons; they must agree for every input (allowed exactly
when a matrix rule names caller, method and path, and no reason applies) and the
reasons must be the documented ones. The model below is written from the docs with
Rego's semantics for missing keys and mistyped values (a missing or mistyped fact is
"not true"); hypothesis drives inputs around the shipped data's valid requests,
including every way a field can be missing or of the wrong type."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policy_support import SHIPPED

from ztproxy.policy.embedded import evaluate_loaded
from ztproxy.policy.loader import Loaded, load

DATA = json.loads((SHIPPED / "ztproxy" / "segmentation" / "data.json").read_text(encoding="utf-8"))
MISSING = object()
_LOADED: list[Loaded] = []


def _engine() -> Loaded:
    if not _LOADED:
        _LOADED.append(load([str(SHIPPED)]))
    return _LOADED[0]


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _eq(a: Any, b: Any) -> bool:
    """Rego equality: no bool/number mixing, 1 == 1.0."""
    if _num(a) and _num(b):
        return bool(a == b)
    return type(a) is type(b) and a == b


def _get(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return MISSING
        doc = doc[key]
    return doc


def _under(path: Any, prefix: Any) -> bool:
    if not isinstance(path, str):
        return False
    return prefix == "/" or (path + "/").startswith(prefix + "/")


def model(inp: dict[str, Any]) -> dict[str, Any]:
    reasons: set[str] = set()
    name = _get(inp, "destination", "service")
    svc = DATA["services"].get(name, MISSING) if isinstance(name, str) else MISSING
    if not _eq(_get(inp, "version"), 1):
        reasons.add("input_version_unsupported")
    if not isinstance(svc, dict):
        reasons.add("unknown_service")
        svc = {}
    source = _get(inp, "source", "spiffe_id")
    method = _get(inp, "request", "method")
    path = _get(inp, "request", "path")
    callers = [r for r in svc.get("allow", []) if _eq(r["source"], source)]
    methods = {i for i, r in enumerate(callers) if any(_eq(method, m) for m in r["methods"])}
    paths = {i for i, r in enumerate(callers) if any(_under(path, p) for p in r["path_prefixes"])}
    if svc and not callers:
        reasons.add("source_not_allowed")
    if callers and not methods:
        reasons.add("method_not_allowed")
    if callers and not paths:
        reasons.add("path_not_allowed")
    if methods and paths and not methods & paths:
        reasons.add("method_not_allowed_on_path")
    required = svc.get("user_roles_any", [])
    user = _get(inp, "user")
    roles = _get(inp, "user", "claims", "roles")
    if required:
        if not isinstance(user, dict):
            reasons.add("user_required")
        elif not (isinstance(roles, list) and any(_eq(r, q) for r in roles for q in required)):
            reasons.add("user_role_missing")
    posture = svc.get("device")
    dev = _get(inp, "device")
    if isinstance(posture, dict):
        if not isinstance(dev, dict):
            reasons.add("device_required")
        else:
            level = _get(dev, "claims", "trust_level")
            if not (_num(level) and level >= posture["min_trust_level"]):
                reasons.add("device_trust_level_too_low")
            if posture.get("managed") is True and _get(dev, "claims", "managed") is not True:
                reasons.add("device_not_managed")
            if (
                posture.get("bound_to_client_cert") is True
                and _get(dev, "bound_to_client_cert") is not True
            ):
                reasons.add("device_not_bound_to_client_cert")
    if not reasons and methods & paths:
        return {"allowed": True, "reasons": []}
    if not reasons:
        return {"allowed": False, "reasons": ["policy_default_deny"], "http_status": 403}
    return {"allowed": False, "reasons": sorted(reasons), "http_status": 403}


# -- inputs: the shipped data's valid requests, then fields dropped or mistyped ----------
SOURCES = sorted({r["source"] for s in DATA["services"].values() for r in s["allow"]})
METHODS = sorted({m for s in DATA["services"].values() for r in s["allow"] for m in r["methods"]})
PREFIXES = sorted(
    {p for s in DATA["services"].values() for r in s["allow"] for p in r["path_prefixes"]}
)
ROLES = sorted({q for s in DATA["services"].values() for q in s.get("user_roles_any", [])})
ODD = st.sampled_from([MISSING, None, 5, True, "", [], {}, "x", ["x"]])

paths = st.one_of(
    st.builds(
        lambda p, tail: p + tail,
        st.sampled_from(PREFIXES),
        st.sampled_from(["", "/", "/7", "X", "/a/b", "//", "x/"]),
    ),
    st.sampled_from(["/", "", "/other", "relative"]),
)


def _valid(service: str, rule: dict[str, Any]) -> dict[str, Any]:
    svc = DATA["services"][service]
    roles = svc.get("user_roles_any", [])[:1]
    return {
        "version": 1,
        "source": {"spiffe_id": rule["source"]},
        "destination": {"service": service},
        "request": {"method": rule["methods"][0], "path": rule["path_prefixes"][0] + "/7"},
        "user": {"claims": {"roles": roles}},
        "device": {"claims": {"trust_level": 5, "managed": True}, "bound_to_client_cert": True},
    }


CASES = [(s, r) for s, svc in DATA["services"].items() for r in svc["allow"]]
# where a valid request may be changed, and to what (besides the ODD values)
CHANGES: dict[tuple[str, ...], st.SearchStrategy[Any]] = {
    ("version",): st.just(2),
    ("source",): st.just({}),
    ("source", "spiffe_id"): st.sampled_from(SOURCES),
    ("destination", "service"): st.sampled_from([*DATA["services"], "nope"]),
    ("request",): st.just({}),
    ("request", "method"): st.sampled_from([*METHODS, "DELETE", "get"]),
    ("request", "path"): paths,
    ("user",): st.just({"claims": {}}),
    ("user", "claims", "roles"): st.lists(st.sampled_from([*ROLES, "guest"]), max_size=3),
    ("device",): st.just({}),
    ("device", "claims"): st.just({"trust_level": 5}),
    ("device", "claims", "trust_level"): st.integers(0, 5) | st.just("5"),
    ("device", "claims", "managed"): st.booleans() | st.just("true"),
    ("device", "bound_to_client_cert"): st.booleans(),
}


def _set(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        nxt = doc.get(key)
        if not isinstance(nxt, dict):
            return  # an earlier change replaced the parent: nothing to set
        doc = nxt
    if value is MISSING:
        doc.pop(path[-1], None)
    else:
        doc[path[-1]] = copy.deepcopy(value)  # sampled values are shared objects


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """A valid request of the shipped matrix with a few fields changed (often none):
    near the allow/deny boundary, where a disagreement between `allow` and `deny`
    would show."""
    service, rule = draw(st.sampled_from(CASES))
    doc = json.loads(json.dumps(_valid(service, rule)))
    where = draw(st.lists(st.sampled_from(sorted(CHANGES)), max_size=3, unique=True))
    for path in where:
        _set(doc, path, draw(st.one_of(CHANGES[path], ODD)))
    return doc


def _strip(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _strip(v) for k, v in doc.items() if v is not MISSING}
    return doc


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_shipped_policy_decides_as_documented(doc: dict[str, Any]) -> None:
    inp = _strip(doc)
    raw = evaluate_loaded(_engine().engine, "data.ztproxy.authz.decision", inp)
    assert not isinstance(raw, str), raw
    assert raw.value == model(inp), json.dumps(inp)


def test_every_matrix_rule_admits_its_request_in_policy_and_model() -> None:
    """The allow branch of both is reached (else the property above proves little), and
    one step off each valid request is a deny in both."""
    assert CASES
    for service, rule in CASES:
        inp = _valid(service, rule)
        for doc, allowed in (
            (inp, True),
            ({**inp, "version": 2}, False),
            ({**inp, "request": {**inp["request"], "method": "DELETE"}}, False),
            ({**inp, "request": {**inp["request"], "path": "/elsewhere"}}, False),
        ):
            raw = evaluate_loaded(_engine().engine, "data.ztproxy.authz.decision", doc)
            assert not isinstance(raw, str), raw
            assert raw.value == model(doc)
            assert raw.value["allowed"] is allowed, (service, doc)
