"""Identity on every request: verified user tokens and device tokens (stage 3).

The public entry point is `TokenAuthenticator` (implements `seams.Authenticator`).
Modules, in the order a token meets them:

    carriers      where tokens may travel (Bearer headers) and may not (the query)
    cache         verified tokens by (kind, client-cert thumbprint, SHA-256 of token)
    verifier      the pinned JWT contract, on top of PyJWT
    issuer_keys   per-issuer key cache: TTL, rate-limited refresh, stale window
    jwks          key sources: https endpoint, file, inline
    keyset        which JWKs may verify which algorithm
    binding       RFC 8705 certificate binding (cnf.x5t#S256)
    strictjson    JSON without duplicate names or NaN
"""

from .authenticator import TokenAuthenticator

__all__ = ["TokenAuthenticator"]
