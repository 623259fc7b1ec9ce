"""Fixtures for the dev PKI and dev token tests: CAs, issued material, a CLI parser."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from ztproxy.devtools.pki import DevCA, DevPki, init_dev_pki

NOW = datetime(2026, 11, 28, 1, 2, 3, tzinfo=UTC)


@pytest.fixture(scope="session")
def ca() -> DevCA:
    return DevCA.create()


@pytest.fixture(scope="session")
def other_ca() -> DevCA:
    return DevCA.create("some other CA")


@pytest.fixture(scope="session")
def dev_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return init_dev_pki(tmp_path_factory.mktemp("pki") / "dev")


def _cli_modules() -> tuple[Any, Any]:
    return (
        importlib.import_module("ztproxy.cli.certs"),
        importlib.import_module("ztproxy.cli.tokens"),
    )


@pytest.fixture(scope="session")
def cli_modules() -> tuple[Any, Any]:
    return _cli_modules()


@pytest.fixture
def run_cli(
    cli_modules: tuple[Any, Any], capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """Run `certs ...` / `token ...` through a parser built from our `register` functions."""
    certs, tokens = cli_modules

    def run(*argv: str) -> tuple[int, str, str]:
        parser = argparse.ArgumentParser(prog="ztproxy")
        sub = parser.add_subparsers(dest="command")
        certs.register(sub)
        tokens.register(sub)
        capsys.readouterr()
        args = parser.parse_args(list(argv))
        status = int(args.func(args))
        out, err = capsys.readouterr()
        return status, out, err

    return run
