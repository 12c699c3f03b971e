"""The deployment files name only settings that exist, and run the command that exists."""

from __future__ import annotations

import re

import yaml
from tests.conftest import REPO

from anisearch import Settings
from anisearch._server import ServerSettings

VARIABLE = re.compile(r"\bANISEARCH_[A-Z_]+")
PROVIDER_SETTINGS = {"ANISEARCH_TRACEMOE_KEY", "ANISEARCH_WHATANIMEISTHIS_KEY"}


def known_variables() -> set[str]:
    core = {f"ANISEARCH_{name.upper()}" for name in Settings.model_fields}
    server = {f"ANISEARCH_SERVER_{name.upper()}" for name in ServerSettings.model_fields}
    return core | server | PROVIDER_SETTINGS


def test_every_variable_in_the_deployment_files_is_a_setting() -> None:
    known = known_variables()
    for name in ("Dockerfile", "compose.yaml", "deploy/anisearch.service"):
        used = set(VARIABLE.findall((REPO / name).read_text()))
        assert used, name
        assert used <= known, (name, used - known)


def test_compose_runs_a_gateway_on_redis() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    gateway, redis = compose["services"]["gateway"], compose["services"]["redis"]
    assert redis["image"].startswith("redis:")
    assert gateway["environment"]["ANISEARCH_LEDGER"].startswith("redis://redis:")
    assert gateway["environment"]["ANISEARCH_CACHE"].startswith("redis://redis:")
    assert gateway["ports"] == ["8080:8080"]


def test_the_image_and_the_unit_run_anisearch_serve_and_check_health() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["anisearch"]' in dockerfile
    assert 'CMD ["serve"]' in dockerfile
    assert "/healthz" in dockerfile
    assert "USER anisearch" in dockerfile
    unit = (REPO / "deploy/anisearch.service").read_text()
    assert re.search(r"^ExecStart=\S+/anisearch serve$", unit, re.MULTILINE)
