# Unit tests for the `inventory` service added in examples/segmentation/README.md.
# Copy next to policies/ztproxy/authz.rego, then: ztproxy policy test policies/
package ztproxy.inventory_test

import rego.v1

import data.ztproxy.authz

payments := "spiffe://corp.example/ns/prod/sa/payments"

reports := "spiffe://corp.example/ns/prod/sa/reports"

# Service to service: the route says `user: none` and `device: none`, so both are null.
base := {
	"version": 1,
	"request": {
		"id": "r-1", "method": "POST", "scheme": "https", "host": "inventory.internal",
		"path": "/inventory/items", "parsed_path": ["inventory", "items"],
		"query": {}, "headers": {}, "protocol": "HTTP/1.1",
		"time": "2026-11-28T01:02:03.456Z",
	},
	"source": {"address": "127.0.0.1", "spiffe_id": payments, "certificate": {}},
	"user": null,
	"device": null,
	"destination": {"service": "inventory", "route": "inventory-api"},
}

call(source, method, path) := object.union(base, {
	"source": {"spiffe_id": source},
	"request": object.union(base.request, {"method": method, "path": path}),
})

test_payments_posts_items if {
	d := authz.decision with input as base
	d.allowed == true
}

test_reports_reads_stock if {
	d := authz.decision with input as call(reports, "GET", "/inventory/stock/shelf-4")
	d.allowed == true
}

test_reports_may_not_write if {
	d := authz.decision with input as call(reports, "POST", "/inventory/items")
	d.allowed == false
	d.reasons == ["method_not_allowed"]
}

test_payments_may_not_touch_stock if {
	d := authz.decision with input as call(payments, "POST", "/inventory/stock")
	d.allowed == false
	d.reasons == ["path_not_allowed"]
}

test_checkout_is_not_in_the_matrix if {
	d := authz.decision with input as call("spiffe://corp.example/ns/prod/sa/checkout", "POST",
		"/inventory/items")
	d.allowed == false
	d.http_status == 403
	d.reasons == ["source_not_allowed"]
}

# A prefix matches on a segment boundary only.
test_prefix_is_segment_aware if {
	d := authz.decision with input as call(payments, "POST", "/inventory/itemsX")
	d.reasons == ["path_not_allowed"]
}
