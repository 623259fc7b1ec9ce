"""The proxy benchmark's request mix: which workload sends what, as which user, with which
device posture, and the status the shipped policies must give (about a quarter denied).

Part of bench/bench_proxy.py (run that). `build_plans` mints the tokens (dev issuers, or
the RS256 one) and returns, per connection, the certificate to present and raw HTTP/1.1
requests with their expected status, the plans bench/loadgen.py replays.
"""

from __future__ import annotations

import json
from typing import Any

# == the request mix ======================================================================
USERS = {
    "alice": ["payments-operator"],
    "carol": ["payments-admin", "analyst"],
    "bob": ["analyst"],
    "mallory": [],
}
# (method, path template, user, device variant, status the shipped policy must give).
# Allowed templates count ALLOWED_WEIGHT times: about a quarter of all requests is denied.
MIX: dict[str, list[tuple[str, str, str, str, int]]] = {
    "checkout": [
        ("GET", "/api/v1/charges/ch_{i}", "alice", "ok", 200),
        ("GET", "/api/v1/charges?limit=10&page={i}", "carol", "ok", 200),
        ("POST", "/api/v1/charges", "alice", "ok", 200),
        ("GET", "/api/v1/refunds/rf_{i}", "carol", "ok", 200),
        ("POST", "/api/v1/refunds/rf_{i}", "alice", "ok", 200),
        ("GET", "/api/v1/charges/ch_{i}/lines", "alice", "ok", 200),
        ("DELETE", "/api/v1/charges/ch_{i}", "alice", "ok", 403),  # method_not_allowed
        ("GET", "/api/v1/admin/keys/{i}", "alice", "ok", 403),  # path_not_allowed
        ("GET", "/api/v1/charges/ch_{i}", "mallory", "ok", 403),  # user_role_missing
        ("GET", "/api/v1/charges/ch_{i}", "alice", "weak", 403),  # device trust too low
        ("GET", "/reports/daily/{i}", "bob", "ok", 403),  # source_not_allowed
    ],
    "reports": [
        ("GET", "/api/v1/charges/ch_{i}", "carol", "ok", 200),
        ("GET", "/api/v1/charges?from=2026-01-{i}", "alice", "ok", 200),
        ("POST", "/api/v1/charges", "alice", "ok", 403),
        ("GET", "/api/v1/refunds/rf_{i}", "alice", "ok", 403),
    ],
    "batch": [
        ("GET", "/reports/daily/{i}", "bob", "ok", 200),
        ("GET", "/reports/monthly/{i}/summary", "carol", "ok", 200),
        ("POST", "/reports/uploads/up_{i}", "bob", "ok", 200),
        ("GET", "/reports/daily/{i}", "alice", "ok", 403),
        ("GET", "/api/v1/charges/ch_{i}", "alice", "ok", 403),
    ],
    "payments": [
        ("POST", "/reports/payments/{i}", "bob", "ok", 200),
        ("GET", "/reports/payments/{i}", "bob", "ok", 403),
    ],
    "intruder": [
        ("GET", "/api/v1/charges/ch_{i}", "alice", "ok", 403),
    ],
}
ALLOWED_WEIGHT = 3
# Connection i presents the certificate of CONN_ORDER[i % len]: checkout-heavy.
CONN_ORDER = [
    "checkout",
    "batch",
    "reports",
    "checkout",
    "payments",
    "batch",
    "checkout",
    "reports",
    "checkout",
    "batch",
    "checkout",
    "intruder",
    "reports",
    "checkout",
    "payments",
    "batch",
]


def build_plans(
    pki: Any, rsa: dict[str, Any], alg: str, distinct: int, seed: int = 11
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import random

    from ztproxy.devtools.mint import load_private_key, mint_token

    user_key = rsa["key"] if alg == "RS256" else load_private_key(pki.user_key)
    user_kid = rsa["kid"] if alg == "RS256" else pki.user_kid
    device_key = load_private_key(pki.device_key)
    users = {
        name: mint_token(
            key=user_key,
            kid=user_kid,
            issuer=pki.user_issuer,
            audience=pki.audience,
            subject=name,
            alg=alg,
            ttl=7200,
            claims={"roles": roles},
        )
        for name, roles in USERS.items()
    }
    rng = random.Random(seed)
    plans: dict[str, list[dict[str, Any]]] = {}
    identities: dict[str, Any] = {}
    for workload, templates in MIX.items():
        cert, key = pki.workloads[workload]
        identities[workload] = {"cert": str(cert), "key": str(key)}
        devices = {
            variant: mint_token(
                key=device_key,
                kid=pki.device_kid,
                issuer=pki.device_issuer,
                audience=pki.audience,
                subject=f"{workload}-laptop-{variant}",
                ttl=7200,
                claims={"trust_level": 3 if variant == "ok" else 1, "managed": True},
                bind_cert=cert.read_bytes(),
            )
            for variant in ("ok", "weak")
        }
        reqs = []
        for method, path, user, device, expect in templates:
            for i in range(distinct * (ALLOWED_WEIGHT if expect == 200 else 1)):
                body = (
                    json.dumps({"amount": 1000 + i, "currency": "EUR", "ref": f"r{i}"})
                    if method == "POST"
                    else ""
                )
                target = path.format(i=i % distinct)
                head = (
                    f"{method} {target} HTTP/1.1\r\nHost: localhost\r\n"
                    f"User-Agent: ztbench/1\r\nAccept: application/json\r\n"
                    f"Authorization: Bearer {users[user]}\r\n"
                    f"Device-Authorization: Bearer {devices[device]}\r\n"
                )
                if body:
                    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                reqs.append({"raw": head + "\r\n" + body, "expect": expect})
        rng.shuffle(reqs)
        plans[workload] = reqs
    return [{"identity": w, "requests": plans[w]} for w in CONN_ORDER], identities
