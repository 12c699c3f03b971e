"""Who is calling: tokens, guests by address, trusted proxies, and the settings that declare clients."""

from __future__ import annotations

from pathlib import Path

import pytest

from anisearch import ConfigurationError
from anisearch._server import ServerSettings
from anisearch._server._callers import Caller, Denied, client_address, identify


def test_clients_come_from_the_environment_and_the_server_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        "[server]\nport = 9000\nclient_quota = 7\n[server.clients]\n"
        'discord = "discord-token-1"\ntelegram = { token = "telegram-token", quota = 3, concurrency = 2 }\n'
    )
    monkeypatch.setenv("ANISEARCH_CONFIG", str(config))
    monkeypatch.setenv("ANISEARCH_SERVER_CLIENTS", "discord=discord-token-2,slack=slack-token-9")
    settings = ServerSettings.load()
    assert settings.port == 9000
    assert {spec.name for spec in settings.clients} == {"discord", "telegram", "slack"}
    discord = identify({"x-trace-key": "discord-token-2"}, "127.0.0.1", settings, native=False)
    assert isinstance(discord, Caller)
    assert (discord.name, discord.quota, discord.concurrency) == ("discord", 7, 4)
    assert isinstance(identify({"x-trace-key": "discord-token-1"}, None, settings, native=False), Denied)
    telegram = identify({"authorization": "Bearer telegram-token"}, None, settings, native=True)
    assert isinstance(telegram, Caller)
    assert (telegram.quota, telegram.concurrency) == (3, 2)
    assert "telegram-token" not in repr(settings) + str(settings.model_dump())


def test_a_typo_in_the_server_table_is_refused_and_a_bad_value_names_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mistyped key would leave the default in force (the port, the client list); a bad value is
    named where it was written, not as a variable nobody set."""
    config = tmp_path / "config.toml"
    monkeypatch.setenv("ANISEARCH_CONFIG", str(config))
    config.write_text('[server]\nprot = 8090\nopen = true\n[server.clinets]\nbot = "long-enough-token"\n')
    with pytest.raises(
        ConfigurationError, match=r"unknown setting\(s\) in \[server\].*: clinets, prot; known"
    ):
        ServerSettings.load()
    config.write_text('[server]\nopen = "yes please"\n')
    with pytest.raises(ConfigurationError) as caught:
        ServerSettings.load()
    assert f"open in [server] of the config file {config}" in str(caught.value)
    assert "ANISEARCH_SERVER_OPEN" not in str(caught.value)
    monkeypatch.setenv("ANISEARCH_SERVER_OPEN", "maybe")  # the variable wins, and is named
    with pytest.raises(ConfigurationError, match="ANISEARCH_SERVER_OPEN"):
        ServerSettings.load()


@pytest.mark.parametrize(
    "clients", ["bot", "bot=", "bot=short", "bad name=long-enough-token", "a=same-token-1,b=same-token-1"]
)
def test_bad_client_declarations_are_refused_without_echoing_the_token(clients: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        ServerSettings.load(clients=clients)
    assert "same-token-1" not in str(caught.value)
    assert "long-enough-token" not in str(caught.value)


def test_no_token_is_401_on_a_closed_gateway_and_a_guest_on_an_open_one() -> None:
    closed = ServerSettings.load()
    denied = identify({}, "203.0.113.9", closed, native=True)
    assert isinstance(denied, Denied)
    assert denied.status == 401
    guest = identify({}, "203.0.113.9", ServerSettings.load(open=True, guest_quota=9), native=False)
    assert isinstance(guest, Caller)
    assert (guest.name, guest.quota, guest.guest) == ("203.0.113.9", 9, True)
    assert "203.0.113.9" not in guest.scope  # the ledger holds a keyed hash, not the address


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    trusted = ["10.0.0.0/8"]
    # a stranger cannot pick its own address
    assert client_address("198.51.100.7", "1.2.3.4", trusted) == "198.51.100.7"
    # behind our proxy, the right-most address that is not one of our proxies
    assert client_address("10.0.0.2", "1.2.3.4, 198.51.100.7, 10.0.0.3", trusted) == "198.51.100.7"
    # garbage in the header stops the walk at the last good hop
    assert client_address("10.0.0.2", "nonsense, 10.0.0.5", trusted) == "10.0.0.5"
    # IPv6 guests are counted per /64, as trace.moe counts them
    assert client_address("2001:db8:1:2::5", None, trusted) == "2001:db8:1:2::/64"
    assert client_address("::ffff:198.51.100.7", None, trusted) == "198.51.100.7"
    with pytest.raises(ConfigurationError):
        ServerSettings.load(trusted_proxies="10.0.0.0/8,not-a-network")


def test_a_callers_count_reads_its_own_scope_only() -> None:
    from datetime import UTC, datetime

    import anyio

    from anisearch._ledger import Ticket, open_ledger
    from anisearch._server._callers import GATEWAY, Gate

    settings = ServerSettings.load(open=True, guest_quota=5)
    one = identify({}, "198.51.100.1", settings, native=False)
    two = identify({}, "198.51.100.2", settings, native=False)
    assert isinstance(one, Caller)
    assert isinstance(two, Caller)

    async def run() -> tuple[int, int, int]:
        ledger = open_ledger("memory://", clock=lambda: datetime.now(UTC))
        gate = Gate(ledger, slot_wait=0.1, lease_seconds=10)
        for caller, searches in ((one, 2), (two, 1)):
            for _ in range(searches):
                ticket = await gate.admit(caller)
                assert isinstance(ticket, Ticket)
                await gate.settle(ticket, answered=True)
        only = await ledger.snapshot(GATEWAY, lambda _: one.windows, scope=one.scope)
        assert {q.raw["scope_id"] for q in only} == {one.scope}
        with pytest.raises(ConfigurationError):
            await ledger.snapshot(scope=one.scope)
        return await gate.used(one), await gate.used(two), len(await ledger.snapshot(GATEWAY))

    assert anyio.run(run) == (2, 1, 2)


@pytest.mark.parametrize("ledger_url", ["memory://", "sqlite"])
def test_slot_wait_zero_admits_a_free_slot_and_refuses_a_held_one_at_once(
    ledger_url: str, tmp_path: Path
) -> None:
    import anyio

    from anisearch._ledger import Ticket, open_ledger
    from anisearch._server._callers import Gate, Refused

    settings = ServerSettings.load(open=True, guest_quota=10, guest_concurrency=1)
    caller = identify({}, "198.51.100.7", settings, native=False)
    assert isinstance(caller, Caller)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}" if ledger_url == "sqlite" else ledger_url

    async def run() -> None:
        ledger = open_ledger(url)
        gate = Gate(ledger, slot_wait=0, lease_seconds=10)
        try:
            for _ in range(3):  # one after another: each finds the slot free
                ticket = await gate.admit(caller)
                assert isinstance(ticket, Ticket)
                await gate.settle(ticket, answered=True)
            held = await gate.admit(caller)
            assert isinstance(held, Ticket)
            refused = await gate.admit(caller)
            assert isinstance(refused, Refused)
            assert refused.kind == "concurrency"
            await gate.settle(held, answered=True)
        finally:
            await ledger.clear()
            await ledger.aclose()

    anyio.run(run)
