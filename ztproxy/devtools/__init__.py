"""Developer tooling: a dev PKI (`pki`) and dev tokens (`mint`).

Used by `ztproxy certs init`, `ztproxy token mint`, the demo and the tests; never by the proxy
at run time. Everything here makes throwaway material for one machine; production
certificates and issuer keys come from SPIRE, cert-manager, a corporate CA and the identity
provider (see certs/README.md).
"""
