"""Certificate-bound tokens (RFC 8705 section 3.1): `cnf.x5t#S256` against the client cert.

Takes a verified token's claims, its kind, the route's binding rule and the calling
workload's certificate thumbprint (from the TLS stage: trusted). Returns whether the
token is bound to that certificate, or raises `Unauthenticated`:

- a token bound to another certificate is always refused (`cert_binding_mismatch`),
  user or device, whatever the route says: it is a token replayed by someone else;
- a device token without a binding is refused (`unbound_device_token`) unless the
  route relaxes binding explicitly;
- a `cnf` we cannot check (e.g. `jkt`, DPoP) is refused (`unsupported_binding`):
  accepting it would treat a proof-of-possession token as a bearer token.

The comparison is exact (base64url without padding, as RFC 8705 and the PeerIdentity
define it) and constant-time.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from ..errors import Unauthenticated
from ..model import Binding

X5T_S256 = "x5t#S256"


def check_binding(
    claims: Mapping[str, Any], kind: str, binding: Binding, peer_x5t_s256: str
) -> bool:
    """True when bound to the peer's certificate; False when unbound and allowed."""
    cnf = claims.get("cnf")
    if cnf is None:
        if kind == "device" and binding is Binding.REQUIRED:
            raise Unauthenticated("unbound_device_token", "device token has no cnf")
        return False
    if not isinstance(cnf, Mapping):
        raise Unauthenticated("invalid_claim", "cnf is not an object")
    thumbprint = cnf.get(X5T_S256)
    if thumbprint is None:
        raise Unauthenticated("unsupported_binding", "cnf without x5t#S256")
    if not isinstance(thumbprint, str) or not peer_x5t_s256:
        raise Unauthenticated("cert_binding_mismatch", "cnf.x5t#S256 unusable")
    if not hmac.compare_digest(
        thumbprint.encode("utf-8", "surrogatepass"), peer_x5t_s256.encode("utf-8", "surrogatepass")
    ):
        raise Unauthenticated("cert_binding_mismatch", f"{kind} token bound to another certificate")
    return True
