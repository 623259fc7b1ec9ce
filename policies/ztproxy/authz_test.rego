# Unit tests for ztproxy.authz: the allow path and every deny reason.
# Run with `ztproxy policy test policies/` (in-process) or `opa test policies/`.
package ztproxy.authz_test

import rego.v1

import data.ztproxy.authz

checkout := "spiffe://corp.example/ns/prod/sa/checkout"

# A request that passes every check for the payments service.
base := {
	"version": 1,
	"request": {
		"id": "r-1", "method": "POST", "scheme": "https", "host": "payments.internal",
		"path": "/api/v1/charges", "parsed_path": ["api", "v1", "charges"],
		"query": {}, "headers": {}, "protocol": "HTTP/1.1",
		"time": "2026-11-28T01:02:03.456Z",
	},
	"source": {"address": "127.0.0.1", "spiffe_id": checkout, "certificate": {}},
	"user": {"issuer": "https://idp.corp.example", "subject": "alice",
		"claims": {"roles": ["payments-operator"]}},
	"device": {"issuer": "https://devices.corp.example", "id": "laptop-7",
		"bound_to_client_cert": true, "claims": {"trust_level": 3, "managed": true}},
	"destination": {"service": "payments", "route": "payments-api"},
}

# object.union merges nested objects; replaced() swaps a top-level field whole.
replaced(field, value) := object.union(object.remove(base, [field]), {field: value})

with_request(field, value) := object.union(base, {"request": object.union(base.request, {field: value})})

denied_for(inp, reason) if {
	d := authz.decision with input as inp
	d.allowed == false
	d.http_status == 403
	reason in d.reasons
}

only_reason(inp, reason) if {
	d := authz.decision with input as inp
	d.reasons == [reason]
}

test_allow_checkout_to_payments if {
	d := authz.decision with input as base
	d.allowed == true
	d.reasons == []
}

test_allow_sub_path if {
	d := authz.decision with input as with_request("path", "/api/v1/charges/ch_42")
	d.allowed == true
}

test_allow_batch_to_reports if {
	inp := object.union(base, {
		"request": object.union(base.request, {"method": "GET", "path": "/reports/daily"}),
		"source": {"spiffe_id": "spiffe://corp.example/ns/prod/sa/batch"},
		"user": {"issuer": "i", "subject": "bob", "claims": {"roles": ["analyst"]}},
		"device": {"issuer": "d", "id": "pc-1", "bound_to_client_cert": false,
			"claims": {"trust_level": 2, "managed": true}},
		"destination": {"service": "reports", "route": "reports-api"},
	})
	d := authz.decision with input as inp
	d.allowed == true
}

test_deny_intruder_source if {
	inp := object.union(base, {"source": {"spiffe_id": "spiffe://corp.example/ns/dev/sa/intruder"}})
	only_reason(inp, "source_not_allowed")
	denied_for(inp, "source_not_allowed")
}

test_deny_other_trust_domain if {
	inp := object.union(base, {"source": {"spiffe_id": "spiffe://evil.example/ns/prod/sa/checkout"}})
	denied_for(inp, "source_not_allowed")
}

test_deny_method if {
	inp := with_request("method", "DELETE")
	only_reason(inp, "method_not_allowed")
	denied_for(inp, "method_not_allowed")
}

test_deny_path if {
	inp := with_request("path", "/admin")
	only_reason(inp, "path_not_allowed")
}

test_deny_path_prefix_is_segment_aware if {
	denied_for(with_request("path", "/api/v1/chargesX"), "path_not_allowed")
}

test_deny_method_path_combination if {
	# batch may GET under /reports and POST under /reports/uploads: POST /reports/daily
	# has an allowed method and an allowed path, but no single rule allows both
	inp := object.union(base, {
		"request": object.union(base.request, {"method": "POST", "path": "/reports/daily"}),
		"source": {"spiffe_id": "spiffe://corp.example/ns/prod/sa/batch"},
		"user": {"issuer": "i", "subject": "bob", "claims": {"roles": ["analyst"]}},
		"device": {"issuer": "d", "id": "pc-1", "bound_to_client_cert": false,
			"claims": {"trust_level": 2, "managed": true}},
		"destination": {"service": "reports", "route": "reports-api"},
	})
	only_reason(inp, "method_not_allowed_on_path")
}

test_deny_method_for_second_source if {
	# payments may only POST under /reports/payments
	inp := object.union(base, {
		"request": object.union(base.request, {"method": "GET", "path": "/reports/payments/q1"}),
		"source": {"spiffe_id": "spiffe://corp.example/ns/prod/sa/payments"},
		"user": {"issuer": "i", "subject": "bob", "claims": {"roles": ["analyst"]}},
		"destination": {"service": "reports", "route": "reports-api"},
	})
	denied_for(inp, "method_not_allowed")
}

test_deny_unknown_service if {
	inp := object.union(base, {"destination": {"service": "ledger", "route": "ledger"}})
	only_reason(inp, "unknown_service")
}

test_deny_input_version if {
	denied_for(object.union(base, {"version": 2}), "input_version_unsupported")
}

test_deny_user_required if {
	inp := object.union(base, {"user": null})
	only_reason(inp, "user_required")
}

test_deny_user_role_missing if {
	inp := object.union(base, {"user": {"issuer": "i", "subject": "eve", "claims": {"roles": ["viewer"]}}})
	only_reason(inp, "user_role_missing")
}

test_deny_user_without_roles_claim if {
	inp := replaced("user", {"issuer": "i", "subject": "eve", "claims": {}})
	denied_for(inp, "user_role_missing")
}

test_deny_device_required if {
	inp := object.union(base, {"device": null})
	only_reason(inp, "device_required")
}

test_deny_device_trust_level if {
	inp := object.union(base, {"device": object.union(base.device, {"claims": {"trust_level": 2, "managed": true}})})
	only_reason(inp, "device_trust_level_too_low")
}

test_deny_device_trust_level_missing if {
	inp := replaced("device", object.union(object.remove(base.device, ["claims"]), {"claims": {"managed": true}}))
	denied_for(inp, "device_trust_level_too_low")
}

test_deny_device_unmanaged if {
	inp := object.union(base, {"device": object.union(base.device, {"claims": {"trust_level": 5, "managed": false}})})
	only_reason(inp, "device_not_managed")
}

test_deny_device_not_bound if {
	inp := object.union(base, {"device": object.union(base.device, {"bound_to_client_cert": false})})
	only_reason(inp, "device_not_bound_to_client_cert")
}

test_deny_reports_every_failing_condition if {
	inp := object.union(base, {
		"request": object.union(base.request, {"method": "DELETE", "path": "/admin"}),
		"user": null,
		"device": null,
	})
	d := authz.decision with input as inp
	d.reasons == ["device_required", "method_not_allowed", "path_not_allowed", "user_required"]
}

# -- robust to missing and mistyped keys (the same answer in OPA and the embedded engine)

without(field) := object.remove(base, [field])

test_deny_input_without_user_key if {
	denied_for(without("user"), "user_required")
}

test_deny_input_without_device_key if {
	denied_for(without("device"), "device_required")
}

test_deny_roles_a_string_is_no_role if {
	inp := replaced("user", {"issuer": "i", "subject": "s", "claims": {"roles": "payments-operator"}})
	denied_for(inp, "user_role_missing")
}

test_deny_roles_null_is_no_role if {
	inp := replaced("user", {"issuer": "i", "subject": "s", "claims": {"roles": null}})
	denied_for(inp, "user_role_missing")
}

test_deny_user_null if {
	denied_for(replaced("user", null), "user_required")
}

test_deny_trust_level_a_string if {
	inp := replaced("device", object.union(base.device, {"claims": {"trust_level": "9", "managed": true}}))
	denied_for(inp, "device_trust_level_too_low")
}

test_deny_request_without_method if {
	inp := replaced("request", object.remove(base.request, ["method"]))
	denied_for(inp, "method_not_allowed")
}

test_deny_input_without_destination if {
	denied_for(without("destination"), "unknown_service")
}

test_deny_empty_input if {
	d := authz.decision with input as {}
	d.allowed == false
}
