"""Module-level memos outlive a reload, so each must be a pure function of its key,
independent of configuration (issue 12). This test lists every module-level mutable
container and every lru_cache in ztproxy/ and compares the list with the reviewed one
below: a new memo fails here until someone states why a reload cannot make it wrong.
(The one that could, the 4096-entry PeerCache keyed by certificate bytes, is gone: a
connection's identity is connection state, re-validated under each new runtime.)"""

from __future__ import annotations

import ast
from pathlib import Path

import ztproxy

REVIEWED = {
    # module:name -> why a reload cannot make an entry wrong
    "pipeline:_PROTOCOLS": "HTTP version tuple -> 'HTTP/x.y' text",
    "stages/headers:normalize_name": "header name -> normal form",
    "stages/headers:_never_visible": "keyed by the hidden-set itself (each config's own)",
    "stages/policy_input:_certificates": "keyed by the whole frozen PeerIdentity",
    "stages/policy_input:_claims": "keyed by the claims object (identity-checked)",
    "stages/canonical:_memo": "raw target -> canonical target or refusal (bounded by bytes)",
    "stages/request:_host_name": "Host value -> normal host",
    "audit/record:_ENCODERS": "keyed by the event's field types",
    "ops/logs:_KEY_VERDICTS": "log field name -> masked or not",
    "policy/loader:_PARKED": "not a memo: engines waiting to be dropped on their own thread",
}
CONSTANT_TABLES = {
    "identity/keyset:_THUMBPRINT_MEMBERS",
    "errors:_PUBLIC_MESSAGES",
    "stages/canonical:_FORBIDDEN_ESCAPES",
    "cli/tokens:DEFAULTS",
    "cli/tokens:_UNIT",
    "devtools/mint:_EC_CURVES",
    "identity/keyset:_ALG_KEY_TYPES",
    "devtools/demo:_GOOD_LAPTOP",
}


def _memos() -> set[str]:
    root = Path(ztproxy.__file__).parent
    found: set[str] = set()
    for path in root.rglob("*.py"):
        module = str(path.relative_to(root).with_suffix(""))
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                value = node.value
                mutable = (
                    isinstance(value, (ast.Dict, ast.Set, ast.List))
                    or (isinstance(value, ast.Call) and "cache" in ast.unparse(value.func))
                    or (
                        isinstance(value, ast.Call)
                        and ast.unparse(value.func)
                        in ("dict", "set", "list", "OrderedDict", "collections.OrderedDict")
                    )
                )
                if mutable:
                    found |= {
                        f"{module}:{t.id}"
                        for t in targets
                        if isinstance(t, ast.Name) and t.id != "__all__"
                    }
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if any("cache" in ast.unparse(d) for d in node.decorator_list):
                    found.add(f"{module}:{node.name}")
    return found


def test_every_module_level_memo_is_reviewed() -> None:
    assert _memos() - CONSTANT_TABLES == set(REVIEWED)
