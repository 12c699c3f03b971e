"""The public surface: one sorted __all__ of the users' names, loaded lazily; version from metadata."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from datetime import UTC, datetime
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

PROVIDER_AUTHOR_TYPES = {
    "AccountProvider",
    "Capabilities",
    "Credential",
    "Page",
    "Provider",
    "ProviderAnswer",
    "ProviderContext",
    "SearchOptions",
    "SearchQuery",
    "UploadLimits",
}
"""What only someone writing a provider meets (``anisearch.provider``), not the users' API."""


def test_all_is_sorted_and_complete() -> None:
    # ruff's RUF022 order: CONSTANTS, then Classes, then functions, each alphabetical
    assert anisearch.__all__ == sorted(
        anisearch.__all__, key=lambda name: (0 if name.isupper() else 1 if name[0].isupper() else 2, name)
    )
    for name in anisearch.__all__:
        assert getattr(anisearch, name) is not None
    public = {name for name in vars(anisearch) if not name.startswith("_")}
    typing_names = {"annotations", "IO", "TYPE_CHECKING", "Any", "cli", "provider"}  # and submodules
    assert public - typing_names - PROVIDER_AUTHOR_TYPES - set(anisearch.__all__) == set()
    assert set(anisearch.__all__) <= set(dir(anisearch))


def test_the_users_api_has_the_types_they_meet_and_no_provider_plumbing() -> None:
    users = {"AttemptCallback", "WaitCallback", "ApiKeys", "AsyncApiKeys", "QuotaWindow", "Strategy"}
    assert users <= set(anisearch.__all__)
    assert PROVIDER_AUTHOR_TYPES.isdisjoint(anisearch.__all__)
    from anisearch.provider import Provider

    assert anisearch.Provider is Provider  # provider authors' old imports keep working
    client = anisearch.Client(anisearch.Settings.load(cache="off", ledger="memory://"))
    with client:
        assert isinstance(client.api_keys, anisearch.ApiKeys)


def _modules_after(code: str) -> set[str]:
    """The top-level packages a fresh interpreter has loaded after running ``code``."""
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    return set(done.stdout.split())


HEAVY = {"PIL", "pydantic", "pydantic_settings", "httpx", "rich", "anyio"}


def test_import_anisearch_loads_no_engine() -> None:
    assert _modules_after("import anisearch") & HEAVY == set()
    assert {"pydantic", "httpx"} <= _modules_after("import anisearch; anisearch.Client")


def test_help_loads_neither_pillow_nor_settings_nor_httpx() -> None:
    code = (
        "import contextlib, io, sys\n"
        "sys.argv = ['anisearch', '--help']\n"
        "from anisearch.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main()"
    )
    assert _modules_after(code) & HEAVY == set()


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


_RESET = datetime(2026, 11, 22, 9, 14, tzinfo=UTC)


def _all_failed() -> AllProvidersFailedError:
    group = AllProvidersFailedError(
        "no provider answered",
        [
            QuotaExhaustedError("spent", provider="tracemoe", status_code=402),
            ProviderTimeoutError("slow", provider="whatanimeisthis"),
        ],
    )
    group.attempts = [
        anisearch.Attempt(
            provider="tracemoe", outcome="failed", error="QuotaExhaustedError", status_code=402
        ),
        anisearch.Attempt(provider="whatanimeisthis", outcome="failed", error="ProviderTimeoutError"),
    ]
    return group


ERRORS_AS_RAISED: list[tuple[BaseException, dict[str, object]]] = [
    # one of each class anisearch exports, as anisearch raises it, with the attributes a caller reads
    (AnisearchError("something went wrong"), {}),
    (ConfigurationError("ANISEARCH_TIMEOUT must be a positive number of seconds, got '-1'"), {}),
    (
        UnknownProviderError("tracemo", ["whatanimeisthis", "tracemoe"], note="from ANISEARCH_PROVIDERS"),
        {"name": "tracemo", "known": ["tracemoe", "whatanimeisthis"]},
    ),
    (anisearch.ClientClosedError("the client is closed; open a new one"), {}),
    (InvalidImageError("shot.jpg: the image is corrupt or truncated and cannot be decoded"), {}),
    (
        ImageTooLargeError(
            "the image is 30000000 bytes; the limit is 26214400",
            size_bytes=30_000_000,
            limit_bytes=26_214_400,
        ),
        {"provider": None, "size_bytes": 30_000_000, "limit_bytes": 26_214_400},
    ),
    (
        anisearch.LedgerError("the quota ledger is unreachable", ledger="redis://:***@cache:6379/0"),
        {"ledger": "redis://:***@cache:6379/0"},
    ),
    (
        ProviderError("unexpected answer", provider="tracemoe", status_code=418, retry_after=2.5),
        {"provider": "tracemoe", "status_code": 418, "retry_after": 2.5},
    ),
    (
        QuotaExhaustedError(
            "Search quota depleted",
            provider="tracemoe",
            status_code=402,
            limit=100,
            used=100,
            resets_at=_RESET,
            window="rolling-24h",
        ),
        {"limit": 100, "used": 100, "resets_at": _RESET, "window": "rolling-24h"},
    ),
    (
        anisearch.ConcurrencyLimitError("Concurrency limit exceeded", provider="tracemoe", status_code=402),
        {"provider": "tracemoe", "status_code": 402},
    ),
    (
        anisearch.RateLimitedError(
            "Too Many Requests", provider="whatanime-ga", status_code=429, retry_after=30
        ),
        {"retry_after": 30},
    ),
    (
        anisearch.SignInRateLimitedError(
            "too many sign-ins", provider="whatanimeisthis", status_code=429, retry_after=10
        ),
        {"provider": "whatanimeisthis", "retry_after": 10},
    ),
    (
        anisearch.ProviderBusyError("Error: Search queue is full", provider="tracemoe", status_code=503),
        {"status_code": 503},
    ),
    (
        anisearch.AuthenticationError("Invalid API key", provider="tracemoe", status_code=403),
        {"status_code": 403},
    ),
    (
        anisearch.ImageFetchError("cannot download https://example.com/shot.jpg: HTTP 404"),
        {"provider": None},
    ),
    (
        anisearch.BadRequestError("Method Not Allowed", provider="tracemoe", status_code=405),
        {"status_code": 405},
    ),
    (
        anisearch.UpstreamResponseError(
            "the answer is not JSON",
            provider="whatanimeisthis",
            status_code=200,
            endpoint="/api/anime/search",
        ),
        {"endpoint": "/api/anime/search"},
    ),
    (
        anisearch.ProviderServerError("Internal Server Error", provider="tracemoe", status_code=500),
        {"status_code": 500},
    ),
    (
        anisearch.ProviderConnectionError("the connection was refused", provider="tracemoe"),
        {"provider": "tracemoe", "status_code": None},
    ),
    (ProviderTimeoutError("no answer in 30 seconds", provider="tracemoe"), {"provider": "tracemoe"}),
    (_all_failed(), {}),
]


def test_every_exported_error_survives_pickling() -> None:
    # a ProcessPoolExecutor worker's error comes back pickled: one that cannot be rebuilt breaks the pool
    exported = {
        value
        for value in (getattr(anisearch, name) for name in anisearch.__all__)
        if isinstance(value, type) and issubclass(value, BaseException)
    }
    assert {type(exc) for exc, _ in ERRORS_AS_RAISED} == exported
    for exc, attributes in ERRORS_AS_RAISED:
        clone = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own object
        assert type(clone) is type(exc)
        assert str(clone) == str(exc)
        for name, value in attributes.items():
            assert getattr(clone, name) == value, (type(exc).__name__, name)
        if isinstance(exc, AllProvidersFailedError):
            assert isinstance(clone, AllProvidersFailedError)
            assert [(type(e), str(e)) for e in clone.errors] == [(type(e), str(e)) for e in exc.errors]
            assert clone.attempts == exc.attempts
        else:
            assert vars(clone) == vars(exc)


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


def test_equal_results_hits_and_quotas_collapse_in_a_set() -> None:
    """A bot collecting the hits of several searches dedups them with a set or keys a dict by them: the
    frozen models hash, list and dict fields included; equal ones (a dict's key order aside) hash alike."""
    first = anisearch.Hit(
        provider="tracemoe", anilist_id=1, similarity=0.9, synonyms=["a"], raw={"a": 1, "b": [2]}
    )
    again = anisearch.Hit(
        provider="tracemoe", anilist_id=1, similarity=0.9, synonyms=["a"], raw={"b": [2], "a": 1}
    )
    other = anisearch.Hit(provider="tracemoe", anilist_id=2, similarity=0.9)
    assert first == again
    assert len({first, again, other}) == 2
    results = {
        anisearch.SearchResult(provider="tracemoe", hits=[first, other]): "one",
        anisearch.SearchResult(provider="tracemoe", hits=[again, other]): "same",
    }
    assert list(results.values()) == ["same"]
    quota = anisearch.Quota(provider="tracemoe", limit=100, used=3, window="rolling-24h")
    assert {quota, quota.model_copy()} == {quota}
    created = anisearch.CreatedApiKey(id="k1", key="sk-secret")  # a SecretStr field hashes too
    assert hash(created) == hash(anisearch.CreatedApiKey(id="k1", key="sk-secret"))
