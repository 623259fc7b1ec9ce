"""Operational plumbing: logging setup and redaction."""
