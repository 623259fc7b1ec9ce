# ztproxy default policy: micro-segmentation between workloads, with user roles and
# device posture per destination service. Data: data.ztproxy.segmentation
# (policies/ztproxy/segmentation/data.json). Input: docs/rego-authors.md.
#
# Deny by default. `allow` admits a request when a rule of the segmentation matrix
# names the caller, its method and its path, the user holds a required role and the
# device meets the service's posture. A request not allowed is answered with every
# reason that applies (`deny`), so an operator sees all of them at once.
#
# Written to mean the same in OPA and in the embedded engine, whatever keys the input
# lacks: every fact is a rule that is true or undefined, reasons come from `not fact`,
# and values are type-checked before use (a string `roles` is no role, not an error).
# Only builtins on the embedded engine's allowlist (docs/rego-authors.md).
package ztproxy.authz

import rego.v1

service := data.ztproxy.segmentation.services[input.destination.service]

# -- the decision the proxy asks for ---------------------------------------------------

default decision := {"allowed": false, "reasons": ["policy_default_deny"], "http_status": 403}

decision := {"allowed": true, "reasons": []} if allow

decision := {"allowed": false, "reasons": sort(deny), "http_status": 403} if {
	not allow
	count(deny) > 0
}

# -- what admits a request ---------------------------------------------------------------

allow if {
	input.version == 1
	some rule in service.allow
	rule.source == input.source.spiffe_id
	input.request.method in rule.methods
	some prefix in rule.path_prefixes
	under(prefix)
	user_ok
	device_ok
}

# Segment-aware prefix: /api/v1/charges matches /api/v1/charges and /api/v1/charges/7,
# not /api/v1/chargesX ("path/" starts with "prefix/"); "/" matches every path.
path_slash := concat("", [input.request.path, "/"]) if is_string(input.request.path)

under("/") if path_slash

under(prefix) if startswith(path_slash, concat("", [prefix, "/"]))

# Roles the service requires (any one of them); none required, any user will do.
roles_required := service.user_roles_any if count(service.user_roles_any) > 0

has_required_role if {
	is_array(input.user.claims.roles)
	some role in input.user.claims.roles
	role in roles_required
}

user_ok if not roles_required

user_ok if has_required_role

# Device posture the service requires; none required, any device (or none) will do.
posture := service.device if is_object(service.device)

trust_level_ok if {
	level := input.device.claims.trust_level
	is_number(level)
	level >= posture.min_trust_level
}

device_not_managed if {
	posture.managed == true
	not input.device.claims.managed == true
}

device_not_bound if {
	posture.bound_to_client_cert == true
	not input.device.bound_to_client_cert == true
}

device_ok if not posture

device_ok if {
	trust_level_ok # (a trust level means a device is present)
	not device_not_managed
	not device_not_bound
}

# -- why not: every reason that applies ------------------------------------------------

deny contains "input_version_unsupported" if not input.version == 1

service_known if is_object(service)

deny contains "unknown_service" if not service_known

# The matrix rules that name the caller, and (indexes into them) those allowing the
# method and those allowing the path.
caller_rules := [rule |
	some rule in service.allow
	rule.source == input.source.spiffe_id
]

method_rules contains i if {
	some i, rule in caller_rules
	input.request.method in rule.methods
}

path_rules contains i if {
	some i, rule in caller_rules
	some prefix in rule.path_prefixes
	under(prefix)
}

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

user_present if is_object(input.user)

deny contains "user_required" if {
	roles_required
	not user_present
}

deny contains "user_role_missing" if {
	roles_required
	user_present
	not has_required_role
}

device_present if is_object(input.device)

deny contains "device_required" if {
	posture
	not device_present
}

deny contains "device_trust_level_too_low" if {
	posture
	device_present
	not trust_level_ok
}

deny contains "device_not_managed" if {
	device_present
	device_not_managed
}

deny contains "device_not_bound_to_client_cert" if {
	device_present
	device_not_bound
}
