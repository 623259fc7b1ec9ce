# ztproxy default policy: micro-segmentation between workloads, with user roles and
# device posture per destination service. Data: data.ztproxy.segmentation
# (policies/ztproxy/segmentation/data.json). Input: docs/rego-authors.md.
#
# Deny by default: a request is allowed only when no deny reason applies, and every
# failing condition adds its own reason, so an operator sees all of them at once.
# Uses only builtins that both OPA and regorus implement.
#
# Written to be cheap in regorus's compiled VM, where every rule call, loop and
# builtin costs about a microsecond: each fact is computed once (`checks`, `posture`,
# `roles_any`) and the deny rules only combine them. docs/rego-authors.md has the
# measurements; tests/policy/test_policy_vm.py proves this file gives the same
# decision as its first, plainer version (tests/policy/reference/authz_v1.rego).
package ztproxy.authz

import rego.v1

seg := data.ztproxy.segmentation

service := seg.services[input.destination.service]

# -- the decision the proxy asks for ---------------------------------------------------

default decision := {"allowed": false, "reasons": ["policy_default_deny"], "http_status": 403}

decision := verdict(sort(deny))

# An allow also needs a positive match in the segmentation matrix, not only the absence of
# deny reasons: a condition that cannot be evaluated (a builtin error, malformed data)
# drops out of `deny`, and must never turn into an allow. Without the match the decision
# is undefined here, and the default above denies.
verdict(reasons) := {"allowed": true, "reasons": []} if {
	reasons == []
	[true, true] in checks
}

verdict(reasons) := {"allowed": false, "reasons": reasons, "http_status": 403} if reasons != []

# -- input sanity -----------------------------------------------------------------------

deny contains "input_version_unsupported" if input.version != 1

deny contains "unknown_service" if not seg.services[input.destination.service]

# -- workload segmentation: source SPIFFE ID, method, path prefix -----------------------

# One [method allowed, path allowed] pair per allow rule that names the caller.
checks := [[method in rule.methods, path_ok] |
	some rule in service.allow
	rule.source == input.source.spiffe_id
	path_ok := [prefix | some prefix in rule.path_prefixes; under(prefix)] != []
]

# Never undefined, so a request without a method still gets its own reason.
default method := null

method := input.request.method

# Segment-aware prefix: /api/v1/charges matches /api/v1/charges and /api/v1/charges/7,
# not /api/v1/chargesX ("path/" starts with "prefix/"); "/" matches every path.
path_slash := concat("", [input.request.path, "/"])

under(prefix) if {
	prefix == "/"
	path_slash
}

under(prefix) if startswith(path_slash, concat("", [prefix, "/"]))

deny contains "source_not_allowed" if {
	service
	checks == []
}

deny contains "method_not_allowed" if {
	checks != []
	not [true, true] in checks
	not [true, false] in checks
}

deny contains "path_not_allowed" if {
	checks != []
	not [true, true] in checks
	not [false, true] in checks
}

# Method and path each allowed by some rule, but never by the same one.
deny contains "method_not_allowed_on_path" if {
	[true, false] in checks
	[false, true] in checks
	not [true, true] in checks
}

# -- user: roles the service requires (any one of them) ---------------------------------

roles_any := service.user_roles_any if count(service.user_roles_any) > 0

deny contains "user_required" if {
	roles_any
	not is_object(input.user)
}

deny contains "user_role_missing" if {
	roles_any
	is_object(input.user)
	not has_required_role
}

has_required_role if {
	some role in input.user.claims.roles
	role in roles_any
}

# -- device posture ---------------------------------------------------------------------

posture := service.device if is_object(service.device)

deny contains "device_required" if {
	posture
	not is_object(input.device)
}

deny contains reason if {
	posture
	is_object(input.device)
	some reason in device_problems
}

device_problems contains "device_trust_level_too_low" if not trust_level_ok

device_problems contains "device_not_managed" if {
	posture.managed == true
	not input.device.claims.managed == true
}

device_problems contains "device_not_bound_to_client_cert" if {
	posture.bound_to_client_cert == true
	not input.device.bound_to_client_cert == true
}

trust_level_ok if {
	is_number(input.device.claims.trust_level)
	input.device.claims.trust_level >= posture.min_trust_level
}
