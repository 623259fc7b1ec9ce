"""TLS material and workload identity (SPIFFE X.509-SVID)."""
