# ztproxy default policy: micro-segmentation between workloads, with user roles and
# device posture per destination service. Data: data.ztproxy.segmentation
# (policies/ztproxy/segmentation/data.json). Input: docs/rego-authors.md.
#
# Deny by default. A request is allowed only when a rule of the segmentation matrix
# names the caller, its method and its path, AND no deny reason applies; every failing
# condition adds its own reason, so an operator sees all of them at once.
#
# Written to mean the same in OPA and in the embedded engine, whatever keys the input
# lacks: every fact is a rule that is true or undefined, reasons come from `not fact`,
# and values are type-checked before use (a string `roles` is no role, not an error).
# Only builtins on the embedded engine's allowlist (docs/rego-authors.md).
package ztproxy.authz

import rego.v1

seg := data.ztproxy.segmentation

service := seg.services[input.destination.service]

# -- the decision the proxy asks for ---------------------------------------------------

default decision := {"allowed": false, "reasons": ["policy_default_deny"], "http_status": 403}

decision := {"allowed": true, "reasons": []} if {
	count(deny) == 0
	allowed_by_matrix
}

decision := {"allowed": false, "reasons": sort(deny), "http_status": 403} if count(deny) > 0

# -- input sanity -----------------------------------------------------------------------

version_ok if input.version == 1

deny contains "input_version_unsupported" if not version_ok

service_known if is_object(service)

deny contains "unknown_service" if not service_known

# -- workload segmentation: source SPIFFE ID, method, path prefix -----------------------

# The matrix rules that name the caller.
caller_rules := [rule |
	some rule in service.allow
	rule.source == input.source.spiffe_id
]

# Indexes (into caller_rules) of the rules that allow the method, and the path.
method_rules contains i if {
	some i, rule in caller_rules
	input.request.method in rule.methods
}

path_rules contains i if {
	some i, rule in caller_rules
	some prefix in rule.path_prefixes
	under(prefix)
}

# Segment-aware prefix: /api/v1/charges matches /api/v1/charges and /api/v1/charges/7,
# not /api/v1/chargesX ("path/" starts with "prefix/"); "/" matches every path.
path_slash := concat("", [input.request.path, "/"]) if is_string(input.request.path)

under("/") if path_slash

under(prefix) if startswith(path_slash, concat("", [prefix, "/"]))

# One rule allows both.
allowed_by_matrix if count(method_rules & path_rules) > 0

deny contains "source_not_allowed" if {
	service_known
	count(caller_rules) == 0
}

deny contains "method_not_allowed" if {
	count(caller_rules) > 0
	count(method_rules) == 0
}

deny contains "path_not_allowed" if {
	count(caller_rules) > 0
	count(path_rules) == 0
}

# Method and path each allowed by some rule, but never by the same one.
deny contains "method_not_allowed_on_path" if {
	count(method_rules) > 0
	count(path_rules) > 0
	count(method_rules & path_rules) == 0
}

# -- user: roles the service requires (any one of them) ---------------------------------

roles_required := service.user_roles_any if count(service.user_roles_any) > 0

user_present if is_object(input.user)

user_roles := input.user.claims.roles if is_array(input.user.claims.roles)

has_required_role if {
	some role in user_roles
	role in roles_required
}

deny contains "user_required" if {
	roles_required
	not user_present
}

deny contains "user_role_missing" if {
	roles_required
	user_present
	not has_required_role
}

# -- device posture ---------------------------------------------------------------------

posture := service.device if is_object(service.device)

device_present if is_object(input.device)

deny contains "device_required" if {
	posture
	not device_present
}

deny contains reason if {
	posture
	device_present
	some reason in device_problems
}

trust_level_ok if {
	level := input.device.claims.trust_level
	is_number(level)
	level >= posture.min_trust_level
}

device_managed if input.device.claims.managed == true

device_bound if input.device.bound_to_client_cert == true

device_problems contains "device_trust_level_too_low" if not trust_level_ok

device_problems contains "device_not_managed" if {
	posture.managed == true
	not device_managed
}

device_problems contains "device_not_bound_to_client_cert" if {
	posture.bound_to_client_cert == true
	not device_bound
}
