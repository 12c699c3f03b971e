"""The provider registry: entry points are found, loaded and checked, and a bad one names its package."""

from __future__ import annotations

import importlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from anisearch import ConfigurationError, UnknownProviderError
from anisearch._provider import PROVIDER_GROUP, available_providers, check_provider, load_provider
from anisearch.provider import BaseProvider, ProviderAnswer, SearchQuery

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


class Good(BaseProvider):
    name: ClassVar[str] = "good"
    default_url: ClassVar[str] = "https://good.example"

    def search_request(self, query: SearchQuery) -> httpx.Request:
        return self.request("POST", "/search", content=query.image.data)

    def parse_search(self, response: httpx.Response) -> ProviderAnswer:
        return ProviderAnswer(hits=[])


class Nameless:
    name = "Not A Name!"


class Partial:
    name = "partial"

    def search_request(self, query: SearchQuery) -> httpx.Request:
        raise NotImplementedError


def a_function() -> None:
    """Not a class."""


@dataclass
class Dist:
    name: str


@dataclass
class Entry:
    """What the registry reads of an ``importlib.metadata.EntryPoint``."""

    name: str
    target: Any
    dist: Dist | None = field(default_factory=lambda: Dist("acme-anisearch"))
    value: str = "acme_anisearch:Provider"
    group: str = PROVIDER_GROUP

    def load(self) -> Any:
        if isinstance(self.target, BaseException):
            raise self.target
        return self.target


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> dict[str, Entry]:
    """The entry points the registry sees, replaced by a dict the test fills."""
    entries: dict[str, Entry] = {}
    monkeypatch.setattr("anisearch._provider._provider_entry_points", lambda: entries)
    return entries


def test_a_conforming_provider_is_loaded_and_listed(registered: dict[str, Entry]) -> None:
    registered["good"] = Entry("good", Good)
    assert load_provider("good") is Good
    assert available_providers() == ["good"]


def test_an_unknown_name_lists_the_known_ones(registered: dict[str, Entry]) -> None:
    registered["good"] = Entry("good", Good)
    with pytest.raises(UnknownProviderError, match="good"):
        load_provider("nope")


def test_a_metadata_provider_named_as_a_search_provider_is_told_apart() -> None:
    with pytest.raises(
        UnknownProviderError, match=r"'anilist' \(a metadata provider: it fills titles, it does"
    ):
        load_provider("anilist")


@pytest.mark.parametrize(
    ("target", "words"),
    [
        (a_function, "not a provider class"),
        (Nameless, "lower-case name"),
        (Partial, "lacks capabilities, limits"),
        (ImportError("No module named 'acme_anisearch'"), "cannot be loaded: No module named"),
    ],
    ids=["function", "bad-name", "missing-members", "import-error"],
)
def test_a_bad_entry_point_names_itself_and_its_distribution(
    registered: dict[str, Entry], target: Any, words: str
) -> None:
    name = getattr(target, "name", "acme")
    name = name if isinstance(name, str) and name.islower() else "acme"
    registered[name] = Entry(name, target)
    with pytest.raises(ConfigurationError, match=words) as caught:
        load_provider(name)
    assert f"entry point {name!r}" in str(caught.value)
    assert "distribution 'acme-anisearch'" in str(caught.value)


def test_a_class_registered_under_another_name_is_refused(registered: dict[str, Entry]) -> None:
    registered["better"] = Entry("better", Good, dist=None)
    with pytest.raises(ConfigurationError, match="name is 'good', not 'better'") as caught:
        load_provider("better")
    assert "unknown distribution" in str(caught.value)


def test_every_provider_this_distribution_registers_conforms() -> None:
    table = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["entry-points"][PROVIDER_GROUP]
    assert set(table) == {"tracemoe", "whatanime-ga", "whatanimeisthis"}
    for name, value in table.items():
        module, _, attribute = value.partition(":")
        cls = getattr(importlib.import_module(module), attribute)
        assert check_provider(cls, Entry(name, cls, value=value)) is cls
