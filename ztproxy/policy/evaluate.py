"""`ztproxy policy eval`: one query, evaluated in-process the way `opa eval` does.

Takes policy and data directories, the input as JSON text (or None: no input document
at all, which is not `{}`) and a query; loads through the same loader and load-time
checks the server uses and evaluates with the serving engine. Returns exactly one of
`{"value": V}`, `{"undefined": true}` or `{"error": "one line"}` (a load or an
evaluation error). A query with several results gives the first, as a rule reference
always has one. Blocking; the CLI calls it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .loader import LoadError, load, short_error


def eval_query(
    policy_dirs: Sequence[str], data_dirs: Sequence[str], input_text: str | None, query: str
) -> dict[str, Any]:
    try:
        loaded = load(policy_dirs, data_dirs)
    except LoadError as exc:
        return {"error": str(exc)}
    engine = loaded.engine
    try:
        if input_text is not None:
            engine.set_input_json(input_text)
        answer = json.loads(engine.eval_query_as_json(query))
    except RuntimeError as exc:
        return {"error": short_error(exc)}
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        return {"error": f"evaluation failed ({type(exc).__name__})"}
    rows = answer.get("result") if isinstance(answer, dict) else None
    if not rows:
        return {"undefined": True}
    expressions = rows[0].get("expressions") or []
    if not expressions:
        return {"undefined": True}
    if len(expressions) == 1:
        return {"value": expressions[0].get("value")}
    return {"value": [e.get("value") for e in expressions]}
