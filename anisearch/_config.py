"""Settings: environment variables (``ANISEARCH_*``) over a TOML file over defaults.

The TOML file lives at ``platformdirs.user_config_path("anisearch") / "config.toml"`` (on Linux
``$XDG_CONFIG_HOME/anisearch/config.toml``), or wherever ``ANISEARCH_CONFIG`` points::

    providers = ["tracemoe", "whatanimeisthis"]
    ledger = "redis://127.0.0.1:6379/0"
    timeout = 60

    [tracemoe]
    url = "http://127.0.0.1:8000"     # ANISEARCH_TRACEMOE_URL wins over this
    key = "..."

A provider's own settings are the table named after it, overlaid by the environment variables
``ANISEARCH_<NAME>_<KEY>`` (``whatanime-ga`` becomes ``WHATANIME_GA``). The core does not know which keys a
provider takes: the provider validates its own table.
"""

from __future__ import annotations

import os
import re
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import platformdirs
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from anisearch._exceptions import ConfigurationError
from anisearch._redact import MASK, redact

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "Settings",
    "config_path",
    "provider_setting_source",
    "provider_variable",
    "setting_named",
    "setting_source",
]

APP = "anisearch"

_SECRET_KEY = re.compile(r"(?i)(^|_)(key|token|password|passwd|secret|cookie|credential|api_?key)s?$")
"""Provider settings held as :class:`SecretStr` (masked in repr, str and dumps)."""
_HEADER_SECRET = re.compile(r"(?i)(^|_)(key|token|api_?key)s?$")
"""Secrets that travel in an HTTP header: printable ASCII only."""


_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]{0,30}://[^/@]*@")
_LEDGER_SCHEMES = ("memory", "sqlite", "redis", "rediss")
"""What ``open_ledger`` opens (``anisearch._ledger.SCHEMES``; not imported: a cache hit loads no ledger)."""


def is_secret_setting(name: str) -> bool:
    """Whether a provider setting named ``name`` holds a credential (``key``, ``token``, ``password`` ...)."""
    return bool(_SECRET_KEY.search(name))


def provider_variable(provider: str, name: str) -> str:
    """The environment variable of setting ``name`` of ``provider`` (``ANISEARCH_WHATANIME_GA_TOKEN``)."""
    return f"ANISEARCH_{provider.upper().replace('-', '_')}_{name.upper()}"


_PROVIDER_SETTING_ORIGINS: dict[tuple[str, str], str] = {}
"""Where each provider setting handed over last came from (:meth:`Settings.provider_config` records it)."""


def _provider_options_source(written: dict[str, Any]) -> str:
    """Where ``provider_options`` came from: its variable when set, else the config file (``written``)
    when it has it, else code."""
    if os.environ.get("ANISEARCH_PROVIDER_OPTIONS", "") != "":
        return "ANISEARCH_PROVIDER_OPTIONS"
    if "provider_options" in written:
        return f"provider_options in the config file {config_path()}"
    return "provider_options (given in code)"


def provider_setting_source(provider: str, name: str) -> str:
    """Where setting ``name`` of ``provider`` was written: as :meth:`Settings.provider_config` last merged
    it (the config file's table, then ``ANISEARCH_<PROVIDER>_<NAME>``, then ``provider_options``: the last
    wins), else its variable."""
    return _PROVIDER_SETTING_ORIGINS.get((provider, name), provider_variable(provider, name))


def _check_secret(provider: str, name: str, value: str, where: str | None = None) -> None:
    """Refuse a credential that cannot be sent as is, without echoing it; ``where`` names where it was
    written (its variable by default)."""
    where = where or provider_variable(provider, name)
    if _HEADER_SECRET.search(name):
        bad = any(not 0x20 < ord(char) < 0x7F for char in value.strip())  # noqa: PLR2004 - printable ASCII
        what = "control, space or non-ASCII characters"
    else:
        bad = any(ord(char) < 0x20 or ord(char) == 0x7F for char in value)  # noqa: PLR2004 - C0 and DEL
        what = "control characters"
    if bad:
        raise ConfigurationError(
            f"{where} contains {what}; it cannot be sent (the value is not shown). Copy it again."
        )


def _reveal(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def config_path() -> Path:
    """The TOML config file: ``ANISEARCH_CONFIG`` (a leading ``~`` or ``~user`` expanded) or the platform's
    user config dir + ``config.toml``.

    Raises:
        ConfigurationError: ``ANISEARCH_CONFIG`` starts with a ``~user`` that names no home directory.
    """
    override = os.environ.get("ANISEARCH_CONFIG")
    if override:
        from anisearch._sqlite_url import expand_home

        return Path(expand_home(override, "ANISEARCH_CONFIG"))
    return platformdirs.user_config_path(APP) / "config.toml"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        if os.environ.get("ANISEARCH_CONFIG"):  # named on purpose: a typo must not mean the defaults
            raise ConfigurationError(f"the config file {path} (ANISEARCH_CONFIG) does not exist") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read the config file {path}: {exc}") from exc


class _TomlSource(PydanticBaseSettingsSource):
    """The core keys of the TOML file (provider tables are read by :meth:`Settings.provider_config`)."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # noqa: ARG002  # pragma: no cover
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        known = self.settings_cls.model_fields
        # A table is a provider's (checked when that provider is set up); any other key must be a setting.
        unknown = sorted(k for k, v in self._data.items() if k not in known and not isinstance(v, dict))
        if unknown:
            raise ConfigurationError(
                f"unknown setting(s) in the config file {config_path()}: {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        return {name: self._data[name] for name in known if name in self._data}


def is_redis_url(value: str | None) -> bool:
    """Whether a cache setting names Redis."""
    return value is not None and value.strip().lower().startswith(("redis://", "rediss://"))


def _check_redis_url(value: str, field: str) -> None:
    """Refuse a Redis URL redis-py cannot read (a port or a ``db`` that is not a number) as the setting
    ``field``'s error, its password masked. Without the redis extra it is left to whoever opens Redis."""
    try:
        from redis.connection import parse_url
    except ImportError:
        return
    # a URL redis-py cannot read may hold a password with a raw '/', which the generic masking takes for
    # the path's start: here everything up to the last '@' is masked
    scheme, sep, rest = value.strip().partition("://")
    shown = redact(f"{scheme}{sep}{MASK}@{rest.rpartition('@')[2]}" if sep and "@" in rest else value)
    try:
        parse_url(value.strip())  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    except ValueError as exc:
        # redis-py quotes the part it could not read: a password cut short by '#', '?' or '/' is read as the
        # port, and is masked as the URL masks it.
        problem = re.sub(r"'([^']*)'", lambda part: part[0] if part[1] in shown else f"'{MASK}'", str(exc))
        raise ConfigurationError(
            f"invalid Redis {field} URL {shown!r} ({setting_source(field)}): {problem}"
        ) from None
    database = urlsplit(value.strip()).path.strip("/")
    if database and not database.isdigit():  # redis-py reads '/l' (for '/1') as database 0, silently
        raise ConfigurationError(
            f"invalid Redis {field} URL {shown!r} ({setting_source(field)}): the database (the path after "
            "the port) must be a number, as in redis://host:6379/1"
        )


def settings_error(
    exc: ValidationError, prefix: str, headline: str, named: Callable[[str], str] | None = None
) -> ConfigurationError:
    """One :class:`ConfigurationError` for a settings validation failure, naming each variable
    (``prefix`` + the field, or what ``named`` calls the field) and never quoting the value; a
    ConfigurationError a validator raised is kept."""
    for err in exc.errors():
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, ConfigurationError):
            return ConfigurationError(str(cause))

    def name(loc: tuple[int | str, ...]) -> str:
        variable = f"{prefix}{'_'.join(str(p) for p in loc).upper()}"
        return named(str(loc[0])) if named is not None and len(loc) == 1 else variable

    problems = "; ".join(f"{name(err['loc'])}: {err['msg']}" for err in exc.errors())
    return ConfigurationError(f"{headline}: {problems}")


def setting_named(field: str, item: str) -> str | None:
    """Where ``item`` of setting ``field`` was written: its variable when the variable holds it, else the
    config file's key when that does; None when neither does (it was given in code)."""
    variable = f"ANISEARCH_{field.upper()}"
    if item in (part.strip() for part in os.environ.get(variable, "").split(",")):
        return variable
    written = _read_toml(config_path()).get(field)
    if item == written or (isinstance(written, list) and item in written):
        return f"{field} in the config file {config_path()}"
    return None


_GIVEN_IN_CODE: ContextVar[frozenset[str]] = ContextVar(
    "anisearch_settings_given_in_code", default=frozenset()
)
"""The core settings given as keywords to the :class:`Settings` being made (its validators run meanwhile)."""


def setting_source(field: str, *, table: str | None = None) -> str:
    """Where the value of setting ``field`` came from: ``"<field> (given in code)"`` while the
    :class:`Settings` being made was given it as a keyword, else its variable when set, else the config
    file's key (else the variable). ``table``: a setting of that table of the file (``server``:
    ``ANISEARCH_SERVER_<FIELD>`` or ``[server]``'s key)."""
    if table is None and field in _GIVEN_IN_CODE.get():
        return f"{field} (given in code)"
    variable = f"ANISEARCH_{f'{table}_' if table else ''}{field}".upper()
    written = _read_toml(config_path())
    section = written.get(table, {}) if table else written
    if variable not in os.environ and isinstance(section, dict) and field in section:
        return f"{field} in {f'[{table}] of ' if table else ''}the config file {config_path()}"
    return variable


def _home(path: str, field: str) -> str:
    """``path`` with a leading ``~`` or ``~user`` expanded (:func:`~anisearch._sqlite_url.expand_home`):
    a .env file, a systemd unit or a compose file hands ``~/...`` over as written.

    Raises:
        ConfigurationError: No home directory to put in its place; the message names the setting.
    """
    if not path.startswith("~"):
        return path  # the config file is read (to name the setting) only when there is something to say
    from anisearch._sqlite_url import expand_home

    return expand_home(path, setting_source(field))


class Settings(BaseSettings):
    """Where anisearch sends requests and keeps its state. Every field has an ``ANISEARCH_*`` variable.

    Raises:
        ConfigurationError: A value does not parse (the message names the variable, never the value), or
            a keyword names no setting.
    """

    def __init__(self, **values: Any) -> None:
        # The environment may hold any ANISEARCH_* variable (a provider's own), but a keyword given in code
        # that names no setting is a typo, refused as the config file refuses one.
        known = sorted(type(self).model_fields)
        unknown = sorted(name for name in values if not name.startswith("_") and name not in known)
        if unknown:
            raise ConfigurationError(f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(known)}")

        # a value given in code wins over the variable and the file: the validators' messages name it so
        given = _GIVEN_IN_CODE.set(frozenset(values))
        try:
            super().__init__(**values)
        except ValidationError as exc:
            # from None: pydantic's own message quotes the input, which may hold a credential
            raise settings_error(exc, "ANISEARCH_", "invalid settings", setting_source) from None
        except SettingsError as exc:  # a variable pydantic-settings reads as JSON does not parse
            field = re.search(r'field "(\w+)"', str(exc))
            name = f"ANISEARCH_{field.group(1).upper()}" if field else "a setting"
            raise ConfigurationError(f"invalid settings: {name} is not valid JSON") from None
        finally:
            _GIVEN_IN_CODE.reset(given)

    model_config = SettingsConfigDict(env_prefix="ANISEARCH_", extra="ignore", frozen=True)

    providers: Annotated[list[str] | None, NoDecode] = None
    """Provider order (``ANISEARCH_PROVIDERS``, a comma list). None means the default order; an empty list
    is refused (an empty ``ANISEARCH_PROVIDERS`` is the variable unset)."""
    ledger: str | None = None
    """Ledger URL (``ANISEARCH_LEDGER``): ``memory://``, ``sqlite:///path`` (default, in the state dir) or
    ``redis://host:port/db``. A password in it (``redis://:pw@host``) is masked in repr, str and dumps."""
    cache: str | None = None
    """Result cache (``ANISEARCH_CACHE``): ``off``, a SQLite file's path (default in the cache dir; a
    ``sqlite:///path`` URL names it too) or ``redis://host:port/db``."""
    cache_ttl: float = Field(default=7 * 24 * 3600, gt=0, allow_inf_nan=False)
    """How long a cached result is reused, seconds (``ANISEARCH_CACHE_TTL``)."""
    timeout: float = Field(default=30.0, gt=0, allow_inf_nan=False)  # inf: a stalled upstream hangs
    """How long one attempt may take as a whole, seconds (``ANISEARCH_TIMEOUT``): connecting, sending, any
    sign-in, and reading the entire answer; the same bound applies to downloading an image URL and to
    waiting for a pipe to deliver the input. ``search(deadline=...)`` bounds a whole search."""
    timezone: str = "UTC"
    """Time zone of calendar-day quotas (``ANISEARCH_TIMEZONE``), an IANA name."""
    state_dir: Path = Field(default_factory=lambda: platformdirs.user_state_path(APP))
    """Where the ledger and sessions live (``ANISEARCH_STATE_DIR``; default the platform's state dir). A
    leading ``~`` is expanded, as in every path setting."""
    cache_dir: Path = Field(default_factory=lambda: platformdirs.user_cache_path(APP))
    """Where the result cache lives (``ANISEARCH_CACHE_DIR``; default the platform's cache dir)."""
    provider_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per-provider settings given in code; they win over the environment and the file. Credentials
    (``key``, ``token``, ``password`` ...) are kept as :class:`~pydantic.SecretStr`."""
    metadata: str = "anilist"
    """Metadata provider that fills every hit's titles, MAL ID and adult flag (``ANISEARCH_METADATA``): a
    name in the ``anisearch.metadata`` entry-point group, or ``off``. Its own settings are its table
    (``ANISEARCH_ANILIST_URL``, ``ANISEARCH_ANILIST_TTL``)."""
    include_adult: bool = True
    """Default of ``search(include_adult=...)`` (``ANISEARCH_INCLUDE_ADULT``): ``false`` drops hits of
    adult-only anime from every search, for a bot in a channel that must stay safe for work."""
    upstream_anilist_info: bool = False
    """With ``anilist_info``, also send trace.moe's own ``anilistInfo`` flag
    (``ANISEARCH_UPSTREAM_ANILIST_INFO``). Off by default: titles come from the metadata provider, which
    serves every provider alike, and trace.moe's slot is not kept busy longer."""
    allow_private_urls: bool = False
    """Download image URLs that resolve to loopback, private, link-local or other non-public addresses
    (``ANISEARCH_ALLOW_PRIVATE_URLS``): for self-hosted setups and tests. Off by default, so a bot that
    searches URLs from strangers cannot be pointed into its own network."""

    @field_validator("provider_options", mode="after")
    @classmethod
    def _hide_credentials(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        hidden: dict[str, dict[str, Any]] = {}
        for provider, table in value.items():
            hidden[provider] = {}
            for name, setting in table.items():
                if is_secret_setting(name) and isinstance(setting, str):
                    _check_secret(
                        provider,
                        name,
                        setting,
                        f"{name} of {provider} in {setting_source('provider_options')}",
                    )
                    hidden[provider][name] = SecretStr(setting)
                elif isinstance(setting, str) and _USERINFO.search(setting):  # a URL with a password
                    hidden[provider][name] = SecretStr(setting)
                else:
                    hidden[provider][name] = setting
        return hidden

    @field_serializer("provider_options")
    def _dump_options(self, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {
            provider: {name: "**********" if isinstance(v, SecretStr) else v for name, v in table.items()}
            for provider, table in value.items()
        }

    @field_serializer("ledger", "cache")
    def _dump_url(self, value: str | None) -> str | None:
        return None if value is None else redact(value)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            masked = name in ("ledger", "cache") and isinstance(value, str)
            yield name, redact(value) if masked else value

    @field_validator("state_dir", "cache_dir")
    @classmethod
    def _home_dir(cls, value: Path, info: ValidationInfo) -> Path:
        """A leading ``~`` is the home directory (:func:`_home`)."""
        return Path(_home(str(value), str(info.field_name)))

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigurationError(
                f"unknown time zone {value!r} ({setting_source('timezone')}); use an IANA name such as "
                "'UTC' or 'Asia/Tokyo'"
            ) from exc
        return value

    @field_validator("ledger")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        """Checked here so that every command refuses it, also one the cache answers without the ledger
        (``open_ledger`` checks the rest when the ledger is opened)."""
        if value is None:
            return value
        if "://" not in value:
            value = _home(value, "ledger")
        if "://" not in value and Path(value).is_absolute():
            return value
        scheme = value.partition("://")[0].lower() if "://" in value else ""
        if scheme not in _LEDGER_SCHEMES:
            raise ConfigurationError(
                f"unsupported ledger URL {redact(value)!r} ({setting_source('ledger')}); use memory://, "
                "sqlite:///path or redis://host:port/db"
            )
        if is_redis_url(value):
            _check_redis_url(value, "ledger")
        if scheme == "sqlite" and "~" in value:
            from anisearch._sqlite_url import sqlite_url_home

            return sqlite_url_home(value, setting_source("ledger"))
        return value

    @field_validator("cache")
    @classmethod
    def _cache_file(cls, value: str | None) -> str | None:
        """A ``sqlite:///path`` URL (written as the ledger's) names its file; any other ``scheme://`` but
        Redis is refused (it would have been a file of that name under the current directory); a Redis URL
        is checked as the ledger's. A path's leading ``~`` is the home directory (:func:`_home`)."""
        if value is None:
            return value
        if "://" not in value:
            return _home(value, "cache")
        if is_redis_url(value):
            _check_redis_url(value, "cache")
            return value
        if value.partition("://")[0].lower() == "sqlite":
            from anisearch._sqlite_url import sqlite_url_path

            return sqlite_url_path(value, f"the cache setting ({setting_source('cache')})")
        raise ConfigurationError(
            f"unsupported cache {redact(value)!r} ({setting_source('cache')}); use off, a SQLite file's "
            "path (or sqlite:///path) or redis://host:port/db"
        )

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, value: Any) -> Any:
        """A comma list. Blank is the variable left unset (``ANISEARCH_PROVIDERS=``); given in code or in
        the config file, it is an empty list (refused below)."""
        if isinstance(value, str):
            names = [part.strip() for part in value.split(",") if part.strip()]
            return names or (None if setting_source("providers").startswith("ANISEARCH_") else [])
        return value

    @field_validator("providers")
    @classmethod
    def _someone(cls, value: list[str] | None) -> list[str] | None:
        """An empty list is refused rather than read as "the default providers", as ``search(providers=[])``
        is (an allow-list filtered down to nothing must not spend their quota). ``ANISEARCH_PROVIDERS=""``
        is the variable left unset."""
        if value is not None and not value:
            raise ConfigurationError(
                f"{setting_source('providers')} is empty: name at least one provider, or leave it unset for "
                "the default order"
            )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - pydantic-settings' hook signature
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _TomlSource(settings_cls, _read_toml(config_path()))

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Settings from the environment and the config file, with ``overrides`` on top.

        Raises:
            ConfigurationError: A value does not parse; the message names the variable.
        """
        settings = cls(**overrides)
        for variable, value in os.environ.items():
            provider, _, name = variable.removeprefix("ANISEARCH_").partition("_")
            if variable.startswith("ANISEARCH_") and name and is_secret_setting(name.lower()):
                _check_secret(provider.lower(), name.lower(), value)
        return settings

    @property
    def ledger_url(self) -> str:
        """The ledger URL in force (the default is a SQLite file in ``state_dir``)."""
        from anisearch._ledger import default_ledger_url  # the ledger package, only when a ledger is used

        return self.ledger or default_ledger_url(self.state_dir)

    @property
    def cache_path(self) -> Path | None:
        """The result cache's SQLite file, or None when ``cache`` is ``off`` or names Redis."""
        if self.cache is not None and self.cache.strip().lower() in {"off", "0", "false", "no", "none"}:
            return None
        if is_redis_url(self.cache):
            return None
        return Path(self.cache) if self.cache else self.cache_dir / "results.sqlite3"

    @property
    def metadata_provider(self) -> str | None:
        """The metadata provider's name, or None when ``metadata`` is ``off``."""
        name = self.metadata.strip()
        return None if name.lower() in {"off", "0", "false", "no", "none", ""} else name

    @property
    def upstream_titles(self) -> bool:
        """Whether trace.moe is asked for its own ``anilistInfo`` when a search wants titles: when
        ``upstream_anilist_info`` says so, or when there is no metadata provider to ask instead."""
        return self.upstream_anilist_info or self.metadata_provider is None

    def enrichment(self, *, fill: bool, include_adult: bool | None) -> tuple[bool, bool] | None:
        """``(fill, include_adult)`` for a search's hits to go through the metadata enricher, or None when
        it would return them unchanged. ``include_adult`` None means this setting's ``include_adult``;
        without a metadata provider there is nothing to fill, so only the adult filter remains."""
        include = self.include_adult if include_adult is None else include_adult
        if (not fill or self.metadata_provider is None) and include:
            return None
        return fill, include

    def provider_tables(self) -> set[str]:
        """The provider names that settings are given for: the config file's tables (not ``[server]``, the
        gateway's, nor a core setting written as a table) and the keys of ``provider_options``."""
        tables = {name for name, value in _read_toml(config_path()).items() if isinstance(value, dict)}
        return (tables - {"server"} - set(type(self).model_fields)) | set(self.provider_options)

    def check_provider_tables(self) -> None:
        """Refuse provider settings for a provider that is not installed: a misspelt table of the config file
        (``[tracemo]``) or key of ``provider_options`` would otherwise be ignored without a word.

        Raises:
            ConfigurationError: A table or key names no installed provider; the message lists those that are.
        """
        from anisearch._provider import available_metadata_providers, available_providers

        named = self.provider_tables()
        if not named:
            return
        known = set(available_providers()) | set(available_metadata_providers())
        unknown = sorted(named - known)
        if unknown:
            raise ConfigurationError(
                f"settings for a provider that is not installed: {', '.join(unknown)} (a table of the config "
                f"file {config_path()} or a key of ANISEARCH_PROVIDER_OPTIONS); installed: "
                f"{', '.join(sorted(known))}"
            )

    def provider_config(self, name: str) -> dict[str, Any]:
        """The settings of provider ``name``: its TOML table, then ``ANISEARCH_<NAME>_*``, then code.

        Keys are lower-cased (``ANISEARCH_TRACEMOE_URL`` gives ``url``); credentials are handed over in
        plain text (the provider keeps them from its repr).

        Raises:
            ConfigurationError: A credential holds characters it cannot be sent with (control characters;
                for keys and tokens, which travel in headers, also spaces and non-ASCII). The message
                names the setting, never the value.
        """
        written = _read_toml(config_path())
        table = written.get(name, {})
        config: dict[str, Any] = dict(table) if isinstance(table, dict) else {}
        origins = {key: f"[{name}] {key} in the config file {config_path()}" for key in config}
        prefix = f"ANISEARCH_{name.upper().replace('-', '_')}_"
        core = {f"ANISEARCH_{field.upper()}" for field in type(self).model_fields}  # a provider "cache"
        for variable, value in os.environ.items():  # is not given ANISEARCH_CACHE_TTL as its "ttl"
            if variable.startswith(prefix) and value != "" and variable not in core:
                config[variable.removeprefix(prefix).lower()] = value
                origins[variable.removeprefix(prefix).lower()] = variable
        options = self.provider_options.get(name, {})
        config.update(options)
        if options:
            origins.update(dict.fromkeys(options, _provider_options_source(written)))
        for key, origin in origins.items():  # what a provider's own checks of them name
            _PROVIDER_SETTING_ORIGINS[(name, key)] = origin
        revealed = {key: _reveal(value) for key, value in config.items()}
        for key, value in revealed.items():
            if is_secret_setting(key) and isinstance(value, str):
                _check_secret(name, key, value, origins.get(key))
        return revealed
