"""The import-linter contracts stay whole: every private core module is one providers may not import."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import anisearch

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_providers_are_forbidden_every_private_core_module() -> None:
    contracts = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]
    (private,) = [contract for contract in contracts if "never a private anisearch._*" in contract["name"]]
    assert private["source_modules"] == ["anisearch_providers"]
    modules = {
        f"anisearch.{module.name}"
        for module in pkgutil.iter_modules(anisearch.__path__)
        if module.name.startswith("_") and not module.name.startswith("__")
    }
    assert modules == set(private["forbidden_modules"]), "list the new private module in pyproject.toml"
