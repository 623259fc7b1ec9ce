"""Tests of the signed, tamper-evident audit log (issue 5)."""
