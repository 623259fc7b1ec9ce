"""Policies shipped as OPA bundles (the embedded engine only).

A bundle is what `opa build` writes: a gzipped tarball holding `.manifest`, data files
(`data.json`, `data.yaml`) at their data paths, `*.rego` modules and, when signed,
`.signatures.json`. Split by concern, in the order a bundle travels:

- `refusal`: `BundleRefused(reason, detail)`, the one error every check raises; the
  reason codes are the `reason` label of `ztproxy_policy_bundle_failures_total`.
- `archive`: gzip + tar read with limits (member size, total size, ratio, count); safe
  member names; regular files only. Bytes in, `Archive` out. Trusts nothing.
- `manifest`: `.manifest` parsed as OPA reads it (revision, roots, metadata,
  rego_version, wasm) and the roots rule (no overlap, everything under a root).
- `opahash`: the digest OPA's bundle signer puts in the signature for a file (raw
  bytes, or JSON walked with sorted keys as bundle/hash.go does).
- `signing`: `.signatures.json` verified as OPA's bundle/verify.go does, and signed as
  bundle/sign.go does (`ztproxy policy build --signing-key`).
- `contents`: a verified archive -> loader `Source`s (data paths as segments) and the
  roots check; the policy revision (manifest revision + the bundle's SHA-256).
- `build`: `ztproxy policy build` (directories -> bundle bytes).
- `service`: the poller (ETag, jitter, HTTPS with a CA, persisted last good bundle).
- `engine`: the `PolicyEngine` that serves the last activated bundle; a bundle that
  fails any check, or the loader's load-time checks, never replaces it.
"""
