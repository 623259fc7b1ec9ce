"""`ztproxy run --accept-recovery` reaches the audit log's config for one start."""

from __future__ import annotations

from ztproxy.cli import build_parser


def test_run_has_an_explained_accept_recovery_flag() -> None:
    args = build_parser().parse_args(["run", "--config", "x.yaml", "--accept-recovery"])
    assert args.accept_recovery is True
    assert build_parser().parse_args(["run", "--config", "x.yaml"]).accept_recovery is False
