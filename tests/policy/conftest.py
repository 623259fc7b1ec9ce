"""Fixtures for the policy tests: real model values, the shipped policies, a stand-in OPA."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from policy_standin import StandInOpa  # noqa: E402
from policy_support import SHIPPED, make_input  # noqa: E402, F401


@pytest.fixture
def input_factory() -> Callable[..., dict[str, Any]]:
    return make_input


@pytest.fixture
def policies_dir(tmp_path: Path) -> Path:
    """A private copy of the shipped policies, safe to edit."""
    dest = tmp_path / "policies"
    shutil.copytree(SHIPPED, dest)
    return dest


@pytest.fixture
async def standin(policies_dir: Path) -> AsyncIterator[StandInOpa]:
    server = StandInOpa([str(policies_dir)])
    await server.start()
    try:
        yield server
    finally:
        await server.close()
