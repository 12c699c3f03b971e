"""Settings from the pinned environment variables, the TOML file and code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import Field

from anisearch import ConfigurationError, Settings


def test_defaults_live_in_the_platform_dirs(tmp_path: Path) -> None:
    settings = Settings.load()
    assert settings.providers is None
    assert settings.ledger_url.startswith("sqlite:///")
    assert settings.ledger_url.endswith("anisearch/ledger.sqlite3")
    assert str(tmp_path) in settings.ledger_url  # XDG_STATE_HOME points into the test's tmp dir
    assert settings.cache_path is not None
    assert settings.cache_path.name == "results.sqlite3"
    assert settings.timeout == 30


def test_pinned_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANISEARCH_PROVIDERS", "whatanimeisthis, tracemoe")
    monkeypatch.setenv("ANISEARCH_LEDGER", "redis://127.0.0.1:6379/2")
    monkeypatch.setenv("ANISEARCH_CACHE", "off")
    monkeypatch.setenv("ANISEARCH_TIMEOUT", "7.5")
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("ANISEARCH_TRACEMOE_KEY", "secret")
    monkeypatch.setenv("ANISEARCH_WHATANIME_GA_TOKEN", "tok")
    monkeypatch.setenv("ANISEARCH_WHATANIMEISTHIS_KEY", "wk")
    settings = Settings.load()
    assert settings.providers == ["whatanimeisthis", "tracemoe"]
    assert settings.ledger_url == "redis://127.0.0.1:6379/2"
    assert settings.cache_path is None
    assert settings.timeout == 7.5
    assert settings.provider_config("tracemoe") == {"url": "http://127.0.0.1:9", "key": "secret"}
    assert settings.provider_config("whatanime-ga") == {"token": "tok"}
    assert settings.provider_config("whatanimeisthis") == {"key": "wk"}


def test_the_toml_file_is_overridden_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "xdg" / "config" / "anisearch" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        'providers = ["tracemoe"]\ntimeout = 12\n\n[tracemoe]\nurl = "http://file"\nkey = "from-file"\n'
    )
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", "http://env")
    settings = Settings.load()
    assert settings.providers == ["tracemoe"]
    assert settings.timeout == 12
    assert settings.provider_config("tracemoe") == {"url": "http://env", "key": "from-file"}
    in_code = Settings.load(provider_options={"tracemoe": {"url": "http://code"}})
    assert in_code.provider_config("tracemoe")["url"] == "http://code"


def test_an_empty_providers_setting_is_refused_not_read_as_the_default_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asking nobody would otherwise mean asking the default providers and spending their quota."""
    empties: list[list[str] | str] = [[], "", " , "]  # a bot's ",".join() of an allow-list gone empty
    for empty in empties:
        with pytest.raises(ConfigurationError, match=r"^providers \(given in code\) is empty: name at least"):
            Settings.load(providers=empty)
    config = tmp_path / "config.toml"
    monkeypatch.setenv("ANISEARCH_CONFIG", str(config))
    for written in ("[]", '""', '","'):
        config.write_text(f"providers = {written}\n")
        with pytest.raises(
            ConfigurationError, match=rf"^providers in the config file {re.escape(str(config))} is empty"
        ):
            Settings.load()
    monkeypatch.setenv("ANISEARCH_PROVIDERS", "")  # set but empty: no order, as when unset
    assert Settings.load().providers is None


def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANISEARCH_TIMEOUT", "soon")
    with pytest.raises(ConfigurationError, match="ANISEARCH_TIMEOUT"):
        Settings.load()


def test_a_keyword_that_is_not_a_setting_is_refused_in_code_as_in_the_file() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown setting\(s\): timout; known: .*timeout"):
        Settings.load(timout=5)
    with pytest.raises(ConfigurationError, match=r"unknown setting\(s\): timout; known: .*timeout"):
        Settings(timout=5)
    assert Settings.load(timeout=5).timeout == 5


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("providers = [", "cannot read the config file"),
        ('tmeout = 5\n\n[tracemoe]\nurl = "http://file"\n', r"unknown setting.*: tmeout; known: .*timeout"),
        (
            'timeout = "soon"\n',
            r"invalid settings: timeout in the config file .*bad\.toml: Input should be a valid",
        ),
    ],
    ids=["broken TOML", "a key that is not a setting", "a value that does not parse, named where it is"],
)
def test_a_config_file_that_cannot_be_used_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, says: str
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    monkeypatch.setenv("ANISEARCH_CONFIG", str(bad))
    with pytest.raises(ConfigurationError, match=says):
        Settings.load()


def test_a_config_file_named_but_missing_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANISEARCH_CONFIG", str(tmp_path / "typo.toml"))  # not the defaults, silently
    with pytest.raises(ConfigurationError, match=r"typo\.toml \(ANISEARCH_CONFIG\) does not exist"):
        Settings.load()


def test_a_config_file_under_a_home_that_does_not_exist_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANISEARCH_CONFIG", "~nosuchuser-anisearch/config.toml")
    with pytest.raises(ConfigurationError, match=r"^ANISEARCH_CONFIG: ~nosuchuser-anisearch names no home"):
        Settings.load()


def test_the_tables_of_the_config_file_are_not_taken_for_unknown_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('timeout = 5\n\n[tracemoe]\nurl = "http://file"\n\n[server]\nport = 8001\n')
    monkeypatch.setenv("ANISEARCH_CONFIG", str(config))
    assert Settings.load().timeout == 5


def test_provider_options_that_are_not_json_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANISEARCH_PROVIDER_OPTIONS", "{bad")
    with pytest.raises(ConfigurationError, match="ANISEARCH_PROVIDER_OPTIONS is not valid JSON"):
        Settings.load()


def test_credentials_given_in_code_are_masked_everywhere_but_in_the_provider_config() -> None:
    options = {
        "tracemoe": {"url": "http://user:url-pass@127.0.0.1:9", "key": "trace-key"},
        "whatanimeisthis": {"email": "a@b.c", "password": "pass word", "key": "site-key"},
        "whatanime-ga": {"token": "legacy-token"},
    }
    settings = Settings.load(provider_options=options)
    for shown in (repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())):
        for secret in ("url-pass", "trace-key", "pass word", "site-key", "legacy-token"):
            assert secret not in shown
    assert "a@b.c" in repr(settings)  # an email is not a credential
    assert settings.provider_config("tracemoe") == options["tracemoe"]
    assert settings.provider_config("whatanimeisthis") == options["whatanimeisthis"]


def test_private_urls_are_refused_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.load().allow_private_urls is False
    monkeypatch.setenv("ANISEARCH_ALLOW_PRIVATE_URLS", "1")
    assert Settings.load().allow_private_urls is True


def test_a_ledger_or_cache_password_is_masked_but_kept() -> None:
    settings = Settings.load(
        ledger="redis://:hunter2@127.0.0.1:6379/0", cache="redis://:swordfish@127.0.0.1:6379/1"
    )
    for shown in (repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())):
        assert "hunter2" not in shown
        assert "swordfish" not in shown
        assert "127.0.0.1:6379" in shown
    assert settings.ledger_url == "redis://:hunter2@127.0.0.1:6379/0"
    assert settings.cache == "redis://:swordfish@127.0.0.1:6379/1"


def test_the_cache_setting_takes_a_sqlite_url_and_refuses_other_schemes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``sqlite:////abs`` (the ledger's spelling) names that file; it was a file called
    ``sqlite:/abs`` under whatever directory each process started in."""
    assert Settings.load(cache="sqlite:////srv/anisearch/results.db").cache_path == Path(
        "/srv/anisearch/results.db"
    )
    assert Settings.load(cache="sqlite:///cache/results.db").cache_path == Path("cache/results.db")
    monkeypatch.chdir(tmp_path)  # no ./tmp here, while /tmp exists
    with pytest.raises(ConfigurationError, match=r"write sqlite:////tmp/results\.db"):
        Settings.load(cache="sqlite:///tmp/results.db")  # meant /tmp, as the ledger's URL refuses it too
    monkeypatch.setenv("ANISEARCH_CACHE", "file:///srv/results.db")
    with pytest.raises(ConfigurationError, match="ANISEARCH_CACHE"):
        Settings.load()


def test_settings_made_directly_raise_a_configuration_error_without_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``Settings(...)`` as well as ``Settings.load(...)``: pydantic's ValidationError quoted the input
    (here a credential) and escaped ``except AnisearchError``."""
    monkeypatch.setenv("ANISEARCH_PROVIDER_OPTIONS", '{"tracemoe": "key=MY-TRACE-KEY-123"}')
    with pytest.raises(ConfigurationError, match="ANISEARCH_PROVIDER_OPTIONS") as caught:
        Settings()
    assert "MY-TRACE-KEY-123" not in str(caught.value)


def test_a_password_holding_an_at_sign_is_masked_whole() -> None:
    settings = Settings.load(cache="redis://:hunter2@secret@cache.internal:6379/1")
    for shown in (repr(settings), settings.model_dump_json()):
        assert "hunter2" not in shown
        assert "secret" not in shown
        assert "cache.internal:6379" in shown


@pytest.mark.parametrize(
    "password", ["hunter2#secret", "hunter2?secret", "hunter2/secret", "default:hunter2/secret"]
)
def test_a_password_cut_short_by_a_url_delimiter_is_refused_and_masked_whole(password: str) -> None:
    """Unencoded, it ends the host part: redis-py could not use the URL, and names 'hunter2' as its port."""
    with pytest.raises(ConfigurationError, match="Port could not be cast to integer value as") as caught:
        Settings.load(cache=f"redis://:{password}@cache.internal:6379/1")
    assert "hunter2" not in str(caught.value)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize("setting", ["cache", "ledger"])
def test_a_redis_url_redis_cannot_read_is_refused_naming_its_setting(
    monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    """A port that is not a number: the cache's raised redis-py's ValueError at the first search."""
    monkeypatch.setenv(f"ANISEARCH_{setting.upper()}", "redis://:hunter2@127.0.0.1:6379x/1")
    with pytest.raises(ConfigurationError, match=f"invalid Redis {setting} URL") as caught:
        Settings.load()
    assert f"(ANISEARCH_{setting.upper()}): Port could not be cast to integer value as '6379x'" in str(
        caught.value
    )
    assert "hunter2" not in str(caught.value)
    query = "redis://127.0.0.1:6379/1?password=hunter2&db=one"
    with pytest.raises(ConfigurationError, match="Invalid value for 'db'") as caught:
        Settings.load(**{setting: query})
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("setting", ["cache", "ledger"])
def test_a_redis_database_that_is_not_a_number_is_refused(
    monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    """``/l`` typed for ``/1``: redis-py reads it as database 0, which something else may use, silently."""
    monkeypatch.setenv(f"ANISEARCH_{setting.upper()}", "redis://:hunter2@127.0.0.1:6379/l")
    with pytest.raises(
        ConfigurationError, match=r"the database \(the path after the port\) must be a number"
    ) as caught:
        Settings.load()
    assert f"invalid Redis {setting} URL 'redis://***@127.0.0.1:6379/l' (ANISEARCH_{setting.upper()})" in str(
        caught.value
    )
    assert "hunter2" not in str(caught.value)
    for fine in ("redis://127.0.0.1:6379/1", "redis://127.0.0.1:6379", "redis://127.0.0.1:6379/?db=2"):
        Settings.load(**{setting: fine})


def test_a_bad_value_given_in_code_is_named_as_given_in_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variable is set and valid; the keyword given in code wins and is wrong: the message blames the
    keyword, where it named the variable."""
    monkeypatch.setenv("ANISEARCH_TIMEOUT", "30")
    with pytest.raises(ConfigurationError, match=r"^invalid settings: timeout \(given in code\): "):
        Settings.load(timeout=-1)


@pytest.mark.parametrize(
    ("keyword", "value", "valid", "says"),
    [
        ("ledger", "ftp://x", "memory://", "unsupported ledger URL 'ftp://x' (ledger (given in code))"),
        (
            "ledger",
            "~nosuchuser-anisearch/x.db",
            "memory://",
            "ledger (given in code): ~nosuchuser-anisearch",
        ),
        ("cache", "ftp://x", "off", "unsupported cache 'ftp://x' (cache (given in code))"),
        (
            "state_dir",
            "~nosuchuser-anisearch/x",
            "/srv/anisearch",
            "state_dir (given in code): ~nosuchuser-anisearch",
        ),
        ("timezone", "Mars/Base", "Asia/Tokyo", "unknown time zone 'Mars/Base' (timezone (given in code))"),
    ],
)
def test_a_value_a_check_refuses_is_named_as_given_in_code(
    monkeypatch: pytest.MonkeyPatch, keyword: str, value: str, valid: str, says: str
) -> None:
    """The checks of anisearch's own (schemes, homes, zones) blame the keyword too, not its valid variable."""
    monkeypatch.setenv(f"ANISEARCH_{keyword.upper()}", valid)
    with pytest.raises(ConfigurationError, match=re.escape(says)) as caught:
        Settings.load(**{keyword: value})
    assert f"ANISEARCH_{keyword.upper()}" not in str(caught.value)
    assert Settings.load().model_dump()[keyword] is not None  # the variable alone is still fine


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_a_timeout_or_ttl_must_be_a_finite_number(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """An infinite timeout would let a stalled upstream hang a search without a deadline for ever."""
    for variable in ("ANISEARCH_TIMEOUT", "ANISEARCH_CACHE_TTL"):
        monkeypatch.setenv(variable, value)
        with pytest.raises(ConfigurationError, match=rf"{variable}: Input should be a finite number"):
            Settings.load()
        monkeypatch.delenv(variable)


def test_a_providers_bad_setting_names_where_it_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider's setting names where the value it refuses was written: the config file's table, its
    variable, or ``provider_options`` (which wins over both: a valid variable is then not blamed)."""
    from pydantic import BaseModel

    from anisearch._sdk._http import validate_settings

    class Options(BaseModel):
        ttl: float = Field(default=1.0, gt=0)

    def refusal(settings: Settings) -> str:
        with pytest.raises(ConfigurationError) as caught:
            validate_settings("whatanime-ga", Options, settings.provider_config("whatanime-ga"))
        return str(caught.value)

    config = tmp_path / "config.toml"
    config.write_text("[whatanime-ga]\nttl = -1\n")
    monkeypatch.setenv("ANISEARCH_CONFIG", str(config))
    assert f"ttl ([whatanime-ga] ttl in the config file {config}): " in refusal(Settings.load())
    monkeypatch.setenv("ANISEARCH_WHATANIME_GA_TTL", "-2")
    assert "ttl (ANISEARCH_WHATANIME_GA_TTL): " in refusal(Settings.load())
    monkeypatch.setenv("ANISEARCH_WHATANIME_GA_TTL", "5")  # valid, and overridden in code
    assert "ttl (provider_options (given in code)): " in refusal(
        Settings.load(provider_options={"whatanime-ga": {"ttl": -3}})
    )
    with pytest.raises(ConfigurationError, match=r"^key of tracemoe in provider_options \(given in code\)"):
        Settings.load(provider_options={"tracemoe": {"key": "a key"}})
    monkeypatch.delenv("ANISEARCH_WHATANIME_GA_TTL")
    config.write_text('[tracemoe]\nkey = "a key"\n')
    with pytest.raises(
        ConfigurationError, match=r"^\[tracemoe\] key in the config file .* contains control, space"
    ):
        Settings.load().provider_config("tracemoe")


def test_a_leading_tilde_is_the_home_directory_in_every_path_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A .env file, a systemd unit or a compose file hands ``~`` over as written: it made a folder named
    ``~`` in each working directory, so each directory had its own ledger and cache."""
    from anisearch._ledger import open_ledger

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (home / "anisearch.toml").write_text('state_dir = "~/state"\ncache_dir = "~/cache"\n')
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    monkeypatch.setenv("ANISEARCH_CONFIG", "~/anisearch.toml")
    settings = Settings.load()
    assert settings.state_dir == home / "state"
    assert settings.cache_dir == home / "cache"
    assert settings.ledger_url == f"sqlite:///{home}/state/ledger.sqlite3"
    assert settings.cache_path == home / "cache" / "results.sqlite3"
    monkeypatch.setenv("ANISEARCH_STATE_DIR", "~/elsewhere")
    monkeypatch.setenv("ANISEARCH_CACHE_DIR", "~/elsewhere")
    assert Settings.load().state_dir == Settings.load().cache_dir == home / "elsewhere"
    monkeypatch.setenv("ANISEARCH_LEDGER", "sqlite:///~/ledger.sqlite3")
    monkeypatch.setenv("ANISEARCH_CACHE", "~/results.sqlite3")
    settings = Settings.load()
    assert settings.ledger_url == f"sqlite:///{home}/ledger.sqlite3"  # shown as the file it is
    assert open_ledger(settings.ledger_url).path == home / "ledger.sqlite3"  # type: ignore[attr-defined]
    assert settings.cache_path == home / "results.sqlite3"
    assert Settings.load(cache="sqlite:///~/c.sqlite3").cache_path == home / "c.sqlite3"
    assert Settings.load(ledger="~/bare.sqlite3").ledger_url == str(home / "bare.sqlite3")
    assert open_ledger("sqlite:///~/direct.sqlite3").path == home / "direct.sqlite3"  # type: ignore[attr-defined]
    assert not (work / "~").exists()


def test_a_tilde_that_names_no_home_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANISEARCH_STATE_DIR", "~no-such-user-here/state")
    with pytest.raises(ConfigurationError, match="ANISEARCH_STATE_DIR: ~no-such-user-here names no home"):
        Settings.load()
