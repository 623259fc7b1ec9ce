# ztproxy default policy: micro-segmentation between workloads, with user roles and
# device posture per destination service. Data: data.ztproxy.segmentation
# (policies/ztproxy/segmentation/data.json). Input: docs/rego-authors.md.
#
# Deny by default: a request is allowed only when no deny reason applies, and every
# failing condition adds its own reason, so an operator sees all of them at once.
# Uses only builtins that both OPA and regorus implement.
package ztproxy.authz

import rego.v1

seg := data.ztproxy.segmentation

service := seg.services[input.destination.service]

# -- the decision the proxy asks for ---------------------------------------------------

default decision := {"allowed": false, "reasons": ["policy_default_deny"], "http_status": 403}

decision := {"allowed": true, "reasons": []} if {
	count(deny) == 0
}

decision := {"allowed": false, "reasons": sort(deny), "http_status": 403} if {
	count(deny) > 0
}

# -- input sanity -----------------------------------------------------------------------

deny contains "input_version_unsupported" if input.version != 1

deny contains "unknown_service" if not seg.services[input.destination.service]

# -- workload segmentation: source SPIFFE ID, method, path prefix -----------------------

source_rules contains rule if {
	some rule in service.allow
	rule.source == input.source.spiffe_id
}

deny contains "source_not_allowed" if {
	service
	count(source_rules) == 0
}

method_ok(rule) if input.request.method in rule.methods

path_ok(rule) if {
	some prefix in rule.path_prefixes
	path_under(input.request.path, prefix)
}

# Segment-aware prefix: /api/v1/charges matches /api/v1/charges and /api/v1/charges/7,
# not /api/v1/chargesX.
path_under(_, prefix) if prefix == "/"

path_under(path, prefix) if path == prefix

path_under(path, prefix) if startswith(path, concat("", [prefix, "/"]))

deny contains "method_not_allowed" if {
	count(source_rules) > 0
	not any_method_ok
}

deny contains "path_not_allowed" if {
	count(source_rules) > 0
	not any_path_ok
}

# Method and path each allowed by some rule, but never by the same one.
deny contains "method_not_allowed_on_path" if {
	any_method_ok
	any_path_ok
	not any_rule_ok
}

any_method_ok if {
	some rule in source_rules
	method_ok(rule)
}

any_path_ok if {
	some rule in source_rules
	path_ok(rule)
}

any_rule_ok if {
	some rule in source_rules
	method_ok(rule)
	path_ok(rule)
}

# -- user: roles the service requires (any one of them) ---------------------------------

user_present if is_object(input.user)

deny contains "user_required" if {
	count(service.user_roles_any) > 0
	not user_present
}

deny contains "user_role_missing" if {
	count(service.user_roles_any) > 0
	user_present
	not has_required_role
}

has_required_role if {
	some role in input.user.claims.roles
	role in service.user_roles_any
}

# -- device posture ---------------------------------------------------------------------

device_present if is_object(input.device)

deny contains "device_required" if {
	is_object(service.device)
	not device_present
}

deny contains "device_trust_level_too_low" if {
	is_object(service.device)
	device_present
	not trust_level_ok
}

trust_level_ok if {
	is_number(input.device.claims.trust_level)
	input.device.claims.trust_level >= service.device.min_trust_level
}

deny contains "device_not_managed" if {
	service.device.managed == true
	device_present
	not device_managed
}

device_managed if input.device.claims.managed == true

deny contains "device_not_bound_to_client_cert" if {
	service.device.bound_to_client_cert == true
	device_present
	not device_bound
}

device_bound if input.device.bound_to_client_cert == true
