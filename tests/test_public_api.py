"""The public surface: one sorted __all__, every public name exported, version from metadata."""

from __future__ import annotations

import pickle
from importlib.metadata import PackageNotFoundError, version

import pytest

import anisearch
from anisearch import (
    AllProvidersFailedError,
    AnisearchError,
    ConfigurationError,
    ImageTooLargeError,
    InvalidImageError,
    ProviderError,
    ProviderTimeoutError,
    QuotaExhaustedError,
    UnknownProviderError,
)
from anisearch._version import DISTRIBUTION
from anisearch._version import __version__ as source_version


def test_all_is_sorted_and_complete() -> None:
    # ruff's RUF022 order: CONSTANTS, then Classes, then functions, each alphabetical
    assert anisearch.__all__ == sorted(
        anisearch.__all__, key=lambda name: (0 if name.isupper() else 1 if name[0].isupper() else 2, name)
    )
    public = {name for name in vars(anisearch) if not name.startswith("_")}
    modules = {"annotations", "os", "Sequence", "IO", "TYPE_CHECKING", "Any", "cli", "provider"}
    assert public - modules - set(anisearch.__all__) == set()
    for name in anisearch.__all__:
        assert getattr(anisearch, name) is not None


def test_version_comes_from_the_package_metadata() -> None:
    try:
        installed = version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that is not installed under the new name
        installed = source_version
    assert anisearch.__version__ == installed == source_version
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        anisearch.nope  # noqa: B018 - the attribute access is the test


def test_the_error_tree_mixes_in_builtins() -> None:
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(InvalidImageError, ValueError)
    assert issubclass(ProviderTimeoutError, TimeoutError)
    assert issubclass(UnknownProviderError, LookupError)
    assert issubclass(ImageTooLargeError, InvalidImageError)
    assert issubclass(ImageTooLargeError, ProviderError)
    assert issubclass(AllProvidersFailedError, ExceptionGroup)
    assert issubclass(AllProvidersFailedError, AnisearchError)


def test_unknown_provider_lists_the_known_names() -> None:
    exc = UnknownProviderError("tracemo", ["whatanimeisthis", "tracemoe"])
    assert str(exc) == "unknown provider 'tracemo'; known providers: tracemoe, whatanimeisthis"


def test_provider_errors_say_who_and_survive_pickling() -> None:
    exc = QuotaExhaustedError(
        "Search quota depleted", provider="tracemoe", status_code=402, limit=100, used=100
    )
    assert str(exc) == "tracemoe: Search quota depleted (HTTP 402)"
    clone = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own object
    assert (type(clone), clone.provider, clone.status_code, clone.limit, clone.used) == (
        QuotaExhaustedError,
        "tracemoe",
        402,
        100,
        100,
    )


def test_a_local_size_refusal_names_no_provider() -> None:
    exc = ImageTooLargeError("the image is 30000000 bytes; the limit is 26214400", size_bytes=30_000_000)
    assert str(exc) == "the image is 30000000 bytes; the limit is 26214400"
    assert exc.provider is None


def test_except_star_picks_out_one_kind() -> None:
    group = AllProvidersFailedError(
        "no provider answered",
        [
            QuotaExhaustedError("spent", provider="tracemoe"),
            ProviderTimeoutError("slow", provider="whatanimeisthis"),
        ],
    )
    caught: list[BaseException] = []
    try:
        raise group
    except* QuotaExhaustedError as spent:
        caught.extend(spent.exceptions)
    except* ProviderTimeoutError:
        pass
    assert [type(e) for e in caught] == [QuotaExhaustedError]
