"""Packaging hook: the shipped policies become package data.

The top-level `policies/` stays the one source of truth (OPA, `ztproxy policy test` and
the examples read it there). A built wheel also carries a copy at `ztproxy/_policies/`,
made here at build time, so `ztproxy demo` works from `pip install .` or a wheel
(`devtools.demo.find_policies` looks there when the repo's folder is not beside the
package). Editable installs read the repo's folder directly and get no copy.
Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
POLICY_SUFFIXES = (".rego", ".json", ".yaml", ".yml")


class BuildWithPolicies(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        source = HERE / "policies"
        target = Path(self.build_lib) / "ztproxy" / "_policies"
        if target.exists():
            shutil.rmtree(target)
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source)
            if any(part.startswith((".", "__")) for part in rel.parts):
                continue
            if path.is_file() and path.suffix in POLICY_SUFFIXES:
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / rel)


setup(cmdclass={"build_py": BuildWithPolicies})
