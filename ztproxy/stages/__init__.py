"""Pipeline stages: each a small unit with plain inputs and outputs."""
