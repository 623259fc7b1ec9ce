"""The shared table of inputs and expected decisions, run against every engine."""

from __future__ import annotations

from typing import Any

from policy_support import TD, device, user

# (name, make_input keyword arguments, allowed, reasons)
TABLE: list[tuple[str, dict[str, Any], bool, list[str]]] = [
    ("allow_checkout_payments", {}, True, []),
    ("allow_sub_path", {"path": "/api/v1/charges/ch_42"}, True, []),
    ("allow_reports_get_charges", {"source": f"{TD}/prod/sa/reports", "method": "GET"}, True, []),
    (
        "allow_batch_reports",
        {
            "source": f"{TD}/prod/sa/batch",
            "service": "reports",
            "method": "GET",
            "path": "/reports/daily",
            "the_user": user(("analyst",)),
            "the_device": device(trust_level=2, bound=False),
        },
        True,
        [],
    ),
    ("deny_intruder", {"source": f"{TD}/dev/sa/intruder"}, False, ["source_not_allowed"]),
    ("deny_method", {"method": "DELETE"}, False, ["method_not_allowed"]),
    ("deny_path", {"path": "/admin"}, False, ["path_not_allowed"]),
    ("deny_prefix_not_segment", {"path": "/api/v1/chargesX"}, False, ["path_not_allowed"]),
    (
        "deny_method_on_path",
        {
            "source": f"{TD}/prod/sa/batch",
            "service": "reports",
            "method": "POST",
            "path": "/reports/daily",
            "the_user": user(("analyst",)),
            "the_device": device(trust_level=2),
        },
        False,
        ["method_not_allowed_on_path"],
    ),
    ("deny_unknown_service", {"service": "ledger"}, False, ["unknown_service"]),
    ("deny_no_user", {"with_user": False}, False, ["user_required"]),
    ("deny_role", {"the_user": user(("viewer",))}, False, ["user_role_missing"]),
    ("deny_no_device", {"with_device": False}, False, ["device_required"]),
    ("deny_trust", {"the_device": device(trust_level=1)}, False, ["device_trust_level_too_low"]),
    ("deny_unmanaged", {"the_device": device(managed=False)}, False, ["device_not_managed"]),
    (
        "deny_unbound",
        {"the_device": device(bound=False)},
        False,
        ["device_not_bound_to_client_cert"],
    ),
    (
        "deny_everything",
        {"method": "DELETE", "path": "/admin", "with_user": False, "with_device": False},
        False,
        ["device_required", "method_not_allowed", "path_not_allowed", "user_required"],
    ),
]
