"""From issue 15 (the audit CLI): `audit show ... | head` ends quietly, the table
keeps SPIFFE IDs whole and shows the policy's reasons, a refused handshake has no
HTTP status 0, and every `audit` option has help text."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from .conftest import REPO, event, load_cli, run_cli, write_log

LONG_ID = "spiffe://corp.example/ns/production-payments/sa/checkout-frontend-canary-blue"


def test_show_into_head_ends_without_broken_pipe(tmp_path: Path, signer) -> None:
    write_log(
        tmp_path, signer, [event(i) for i in range(1500)], checkpoint_every=500, per_segment=10_000
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    code = "import sys; from ztproxy.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "audit", "show", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does after its line
    err = proc.stderr.read().decode()
    proc.wait(30)
    assert first.startswith(b"time")
    assert "Broken pipe" not in err and "Traceback" not in err, err
    assert proc.returncode == 0


def test_show_table_keeps_ids_whole_shows_reasons_and_no_status_0(tmp_path: Path, signer) -> None:
    evs = [
        event(0, source_spiffe_id=LONG_ID, policy_reasons=("team may read", "mfa ok")),
        event(
            1,
            kind="tls_rejected",
            status=0,
            reason="tls_no_client_cert",
            source_spiffe_id=None,
            policy_reasons=(),
        ),
    ]
    write_log(tmp_path, signer, evs)
    code, out, _ = run_cli(["show", str(tmp_path)])
    rows = out.splitlines()
    assert code == 0 and "policy reasons" in rows[0]
    assert LONG_ID in rows[1] and "team may read; mfa ok" in rows[1]
    cells = rows[2].split()
    assert "tls" in cells and "0" not in cells[2:5]


def test_every_audit_option_has_help_text() -> None:
    parser = argparse.ArgumentParser(prog="ztproxy")
    load_cli().register(parser.add_subparsers(dest="command"))
    audit = next(
        a
        for a in parser._subparsers._group_actions  # type: ignore[union-attr]
    )._name_parser_map["audit"]
    actions = next(a for a in audit._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        f"{name} {opt.dest}"
        for name, sub in actions.choices.items()
        for opt in sub._actions
        if not isinstance(opt, argparse._HelpAction) and not opt.help
    ]
    assert missing == []
