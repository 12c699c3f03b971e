"""The gateway's own settings: the ``[server]`` table of the config file and ``ANISEARCH_SERVER_*``.

::

    [server]
    host = "0.0.0.0"
    port = 8080
    open = false                      # true: callers without a token are served as guests
    trusted_proxies = ["10.0.0.0/8"]  # X-Forwarded-For is believed only from these
    client_quota = 10000              # searches per rolling 24 h per named client
    client_concurrency = 4            # a client's searches in flight at once

    [server.clients]
    discord-bot = "a-long-random-token"
    telegram-bot = { token = "another-token", quota = 500, concurrency = 2 }

``ANISEARCH_SERVER_CLIENTS="name=token,name2=token2"`` adds clients (and wins over the table for a name
given in both). Tokens are kept as :class:`~pydantic.SecretStr`: never shown in a repr, a dump or a log.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from anisearch._config import _read_toml, config_path, setting_source, settings_error
from anisearch._exceptions import ConfigurationError

__all__ = ["ClientSpec", "ServerSettings"]

MIB = 1024 * 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """One named client of the gateway.

    Attributes:
        name: The client's name (shown in ``/me``, metrics and logs; never the token).
        token: What the client sends in ``x-trace-key`` or ``Authorization: Bearer``.
        quota: Searches per rolling 24 h, or None for the gateway's ``client_quota``.
        concurrency: Searches in flight at once, or None for ``client_concurrency``.
    """

    name: str
    token: SecretStr
    quota: int | None = None
    concurrency: int | None = None


class _ClientTable(BaseModel):
    token: SecretStr
    quota: int | None = Field(default=None, ge=0)
    concurrency: int | None = Field(default=None, ge=1)


def _pairs(text: str) -> dict[str, str]:
    """``"name=token,name2=token2"`` as a dict."""
    entries = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, token = part.partition("=")
        if not sep or not token.strip():
            raise ConfigurationError(
                "ANISEARCH_SERVER_CLIENTS takes name=token pairs separated by commas "
                f"(the entry for {name.strip()!r} has no token)"
            )
        entries[name.strip()] = token.strip()
    return entries


def _parse_clients(value: Any) -> list[ClientSpec]:
    """``"name=token,..."`` or a ``{name: token | {token, quota, concurrency}}`` table."""
    if isinstance(value, list) and all(isinstance(item, ClientSpec) for item in value):
        return list(value)
    if not isinstance(value, str | dict):
        raise ConfigurationError("[server.clients] must be a table of name = token")
    entries: dict[str, Any] = _pairs(value) if isinstance(value, str) else dict(value)
    specs = []
    for name, entry in entries.items():
        if not _NAME.fullmatch(str(name)):
            raise ConfigurationError(
                f"invalid client name {name!r}: letters, digits, '.', '_' and '-' (at most 64)"
            )
        try:
            table = (
                _ClientTable(token=entry) if isinstance(entry, str) else _ClientTable.model_validate(entry)
            )
        except ValidationError:
            raise ConfigurationError(
                f"client {name!r}: give a token string or {{token, quota, concurrency}}"
            ) from None  # pydantic's message would quote the token
        token = table.token.get_secret_value()
        if len(token) < 8 or any(not 0x20 < ord(char) < 0x7F for char in token):  # noqa: PLR2004 - printable
            raise ConfigurationError(
                f"client {name!r}: a token needs at least 8 printable ASCII characters without spaces "
                "(the value is not shown)"
            )
        specs.append(ClientSpec(str(name), table.token, table.quota, table.concurrency))
    tokens = [spec.token.get_secret_value() for spec in specs]
    if len(set(tokens)) != len(tokens):
        raise ConfigurationError("two gateway clients share one token; give each its own")
    return specs


class _ServerTomlSource(PydanticBaseSettingsSource):
    """The ``[server]`` table of the config file."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # noqa: ARG002  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        table = _server_table()
        known = self.settings_cls.model_fields
        unknown = sorted(name for name in table if name not in known)
        if unknown:  # a typo would otherwise leave the default in force, unsaid
            raise ConfigurationError(
                f"unknown setting(s) in [server] of the config file {config_path()}: {', '.join(unknown)};"
                f" known: {', '.join(sorted(known))}"
            )
        return {name: table[name] for name in known if name in table}


def _server_table() -> dict[str, Any]:
    """The ``[server]`` table of the config file (empty when it has none).

    Raises:
        ConfigurationError: ``server`` in the file is not a table.
    """
    table = _read_toml(config_path()).get("server", {})
    if not isinstance(table, dict):
        raise ConfigurationError(f"[server] in the config file {config_path()} must be a table")
    return table


class ServerSettings(BaseSettings):
    """How ``anisearch serve`` listens, who may call it, and what each caller may spend.

    Every field has an ``ANISEARCH_SERVER_*`` variable and a key in the ``[server]`` table.

    Raises:
        ConfigurationError: A value does not parse (through :meth:`load`).
    """

    model_config = SettingsConfigDict(env_prefix="ANISEARCH_SERVER_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    """Address to listen on (``0.0.0.0`` in a container)."""
    port: int = Field(default=8080, ge=0, le=65535)
    """TCP port."""
    workers: int = Field(default=1, ge=1, le=64)
    """Worker processes (uvicorn); give them a ``sqlite://`` or ``redis://`` ledger to share."""
    open: bool = False
    """Serve callers without a token as guests (by client address) instead of answering 401."""
    clients: Annotated[list[ClientSpec], NoDecode] = Field(default_factory=list)
    """Named clients and their tokens (``[server.clients]``, ``ANISEARCH_SERVER_CLIENTS``)."""
    client_quota: int = Field(default=10_000, ge=0)
    """Searches per rolling 24 h of a named client (unless its table says otherwise)."""
    client_concurrency: int = Field(default=4, ge=1)
    """Searches in flight at once per named client (unless its table says otherwise)."""
    guest_quota: int = Field(default=50, ge=0)
    """Searches per rolling 24 h per guest address on an open gateway."""
    guest_concurrency: int = Field(default=1, ge=1)
    """Searches in flight at once per guest address on an open gateway."""
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Addresses or networks (CIDR) of reverse proxies whose ``X-Forwarded-For`` is believed."""
    max_body_bytes: int = Field(default=25 * MIB, ge=1024)
    """Largest upload or request body, bytes (trace.moe's own limit: 25 MiB)."""
    max_bodies_bytes: int = Field(default=256 * MIB, ge=1024)
    """Bytes of request bodies one worker holds at once, across all its callers, from a body's first byte
    until its answer is sent; a request past it gets trace.moe's 503 ``Error: Search queue is full`` (its
    clients retry). A request alone is never refused."""
    deadline: float = Field(default=60.0, gt=0, le=86_400, allow_inf_nan=False)
    """Seconds for one search as a whole: reading the input, downloading a URL, every provider (a finite
    number, at most a day)."""
    slot_wait: float = Field(default=30.0, ge=0, le=86_400, allow_inf_nan=False)
    """Seconds a search waits for one of its client's concurrency slots before a 402 (a finite number, at
    most a day)."""

    @field_validator("clients", mode="before")
    @classmethod
    def _clients(cls, value: Any) -> list[ClientSpec]:
        return _parse_clients(value)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: Any) -> list[str]:
        items = [part.strip() for part in value.split(",")] if isinstance(value, str) else list(value)
        networks = []
        for item in items:
            if not item:
                continue
            try:
                networks.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise ConfigurationError(
                    f"trusted proxy {item!r} is not an address or CIDR network"
                ) from None
        return networks

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - pydantic-settings' hook signature
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _EnvClients(settings_cls), env_settings, _ServerTomlSource(settings_cls)

    @classmethod
    def load(cls, **overrides: Any) -> ServerSettings:
        """Settings from the environment and the ``[server]`` table, with ``overrides`` on top.

        Raises:
            ConfigurationError: A value does not parse; the message names the setting, never a token.
        """
        try:
            return cls(**overrides)
        except ValidationError as exc:
            named = partial(setting_source, table="server")
            raise settings_error(exc, "ANISEARCH_SERVER_", "invalid server settings", named) from None

    def client_for(self, token: str) -> ClientSpec | None:
        """The client whose token is ``token`` (compared in constant time), or None."""
        import hmac

        found = None
        for spec in self.clients:
            if hmac.compare_digest(spec.token.get_secret_value().encode(), token.encode()):
                found = spec
        return found


class _EnvClients(PydanticBaseSettingsSource):
    """``ANISEARCH_SERVER_CLIENTS`` merged over the file's ``[server.clients]`` table (by name)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # noqa: ARG002  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        text = os.environ.get("ANISEARCH_SERVER_CLIENTS")
        if not text:
            return {}
        table = _read_toml(config_path()).get("server", {})
        merged: dict[str, Any] = dict(table.get("clients", {})) if isinstance(table, dict) else {}
        merged.update(_pairs(text))
        return {"clients": merged}
