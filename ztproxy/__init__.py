"""ztproxy: a zero-trust policy enforcement proxy.

mTLS workload identity -> canonical request -> user and device tokens -> OPA / Rego
decision -> streamed forwarding -> signed, hash-chained audit record.
"""

__version__ = "0.1.0"
