"""`anisearch emulate`: every knob listed and taken, fixed ports, the URL and demo account at start."""

from __future__ import annotations

import builtins
import importlib
import json
import socket
import tomllib
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from tests.cli_runner import run_in_process as cli
from tests.conftest import REPO

from anisearch._cli import _emulate
from anisearch_emulators import anilist, tracemoe, whatanime_ga, whatanimeisthis

SHIPPED = {"tracemoe": tracemoe, "whatanime-ga": whatanime_ga, "whatanimeisthis": whatanimeisthis}


@pytest.fixture
def shipped(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The CLI sees exactly the shipped emulators, whatever the installed metadata says."""
    factories: dict[str, Any] = {name: module.create_app for name, module in SHIPPED.items()}
    monkeypatch.setattr(_emulate, "available_emulators", lambda: list(factories))
    monkeypatch.setattr(_emulate, "load_emulator", lambda name: factories[name])
    return factories


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[uvicorn.Config]:
    """What ``emulate`` would serve: each server's config; serving itself returns at once."""
    configs: list[uvicorn.Config] = []

    async def serve(self: uvicorn.Server, sockets: Any = None) -> None:
        configs.append(self.config)

    monkeypatch.setattr(uvicorn.Server, "serve", serve)
    return configs


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_base(count: int) -> int:
    """A port with ``count`` free ports from it on."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base: int = sock.getsockname()[1]
        if base + count <= 65535 and all(_is_free(base + n) for n in range(count)):
            return base
    pytest.fail("no run of free ports on loopback")  # pragma: no cover - a machine out of ports


@pytest.fixture
def any_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every port counts as free (the default ports may be taken on this machine)."""
    monkeypatch.setattr(_emulate, "listening_socket", lambda host, port: socket.socket())


def test_help_lists_every_emulators_knobs_and_default_port(shipped: dict[str, Any]) -> None:
    flat = " ".join(cli("emulate", "-h").stdout.split())
    assert "Default ports: tracemoe 8000, whatanime-ga 8001, whatanimeisthis 8002" in flat
    assert 'whatanimeisthis: envelope="bare", style="camel", https=false' in flat
    assert "guest_daily_limit=5" in flat
    assert "trusted_origins=[]" in flat  # a list JSON can give is a knob too
    assert "takes knobs its factory does not list" not in flat
    assert "fetch_transport" not in flat  # a transport only code can give is not offered as a knob
    assert "clock=" not in flat  # nor a callable
    assert "secret" not in flat  # nor bytes made fresh per app


def test_a_whatanimeisthis_knob_reaches_the_app_and_an_unknown_one_names_the_known(
    shipped: dict[str, Any],
) -> None:
    app = _emulate._build("whatanimeisthis", {"guest_daily_limit": 2, "envelope": "code"}, strict=True)
    assert (app.state.emulator.knobs.guest_daily_limit, app.state.emulator.knobs.envelope) == (2, "code")
    done = cli("emulate", "whatanimeisthis", "-o", "colour=1")
    assert done.returncode == 2
    error, hint = done.stderr.strip().splitlines()
    assert error == "anisearch: error: the whatanimeisthis emulator has no knob colour"
    assert "guest_daily_limit" in hint


def test_the_knobs_given_as_json_objects_are_listed_and_reach_the_app(shipped: dict[str, Any]) -> None:
    """trace.moe's ``keys`` and whatanime.ga's ``tokens`` were missing from ``emulate -h`` and from the
    hint that lists the knobs, since code may give objects there too; from the command line they are JSON."""
    flat = " ".join(cli("emulate", "-h").stdout.split())
    assert "keys=null" in flat
    assert "tokens=null" in flat
    assert "guest=null" in flat
    done = cli("emulate", "tracemoe", "-o", "colour=1")
    assert done.returncode == 2
    assert "keys" in done.stderr.strip().splitlines()[1].removeprefix("hint: its knobs: ").split(", ")
    app = _emulate._build("tracemoe", {"keys": {"MYKEY": 4}}, strict=True)
    assert _get(app, "/me", **{"x-trace-key": "MYKEY"})["quota"] == 20000  # tier 4
    app = _emulate._build("whatanime-ga", {"tokens": {"T": {"limit": 5}}, "guest": {"quota": 3}}, strict=True)
    token, guest = _get(app, "/api/me?token=T"), _get(app, "/api/me")
    assert (token["user_limit"], token["user_quota"], guest["user_quota"]) == (5, 150, 3)


def _get(app: Any, path: str, **headers: str) -> Any:
    """The JSON an emulator app answers ``GET path`` with (in process)."""

    async def get() -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
            return (await client.get(path, headers=headers)).json()

    return anyio.run(get)


@pytest.mark.parametrize(
    ("emulator", "option", "said"),
    [
        ("tracemoe", 'keys={"MYKEY": 7}', "keys: 'MYKEY' maps to 7, not a tier (0, 1, 2, 3, 4, 5, 6, 9)"),
        ("tracemoe", "keys=[4]", 'keys takes an object of API key -> tier, such as {"MYKEY": 4}, not [4]'),
        ("whatanime-ga", 'tokens={"T": {"limits": 5}}', "tokens['T'] has no field limits"),
        ("whatanime-ga", 'tokens={"T": 5}', "tokens['T'] takes an object of limit, limit_ttl, quota"),
        (
            "whatanime-ga",
            'tokens=["MYTOKEN"]',
            "tokens takes an object of API token -> allowance, such as {\"MYTOKEN\": {}}, not ['MYTOKEN']",
        ),
    ],
)
@pytest.mark.usefixtures("shipped", "any_port")
def test_an_object_knob_the_emulator_refuses_is_one_line(
    served: list[uvicorn.Config], emulator: str, option: str, said: str
) -> None:
    done = cli("emulate", emulator, "-o", option)
    assert done.returncode == 2
    assert done.stderr.startswith(f"anisearch: error: the {emulator} emulator refused its knobs: {said}")
    assert served == []


def test_a_knob_value_the_emulator_refuses_is_one_line(shipped: dict[str, Any]) -> None:
    done = cli("emulate", "whatanimeisthis", "-o", "envelope=xml")
    assert done.returncode == 2
    assert done.stderr.startswith(
        "anisearch: error: the whatanimeisthis emulator refused its knobs: envelope"
    )


def test_default_ports_stay_put_when_another_emulator_is_installed() -> None:
    shipped = {name: module.create_app for name, module in SHIPPED.items()}
    before = _emulate.plan_ports(shipped, None)
    assert before == {"tracemoe": 8000, "whatanime-ga": 8001, "whatanimeisthis": 8002}

    def undeclared(**knobs: Any) -> Any:  # a third party's emulator without DEFAULT_PORT
        return knobs

    after = _emulate.plan_ports({**shipped, "aaa-first-by-name": undeclared}, None)
    assert {name: after[name] for name in shipped} == before
    assert after["aaa-first-by-name"] == 8003


def test_port_moves_every_default_port_by_one_offset() -> None:
    shipped = {name: module.create_app for name, module in SHIPPED.items()}
    assert _emulate.plan_ports(shipped, 9100) == {
        "tracemoe": 9100,
        "whatanime-ga": 9101,
        "whatanimeisthis": 9102,
    }
    assert _emulate.plan_ports({"whatanimeisthis": whatanimeisthis.create_app}, 9100) == {
        "whatanimeisthis": 9100
    }


def test_emulate_all_prints_each_url_and_the_demo_account(
    shipped: dict[str, Any], served: list[uvicorn.Config]
) -> None:
    base = _free_base(3)
    done = cli("emulate", "all", "--port", str(base), "-o", "latency=0")
    assert done.returncode == 0, done.stderr
    assert sorted(config.port for config in served) == [base, base + 1, base + 2]
    lines = done.stdout.splitlines()
    url = f"http://127.0.0.1:{base + 2}"
    assert f"whatanimeisthis: {url}   export ANISEARCH_WHATANIMEISTHIS_URL={url}" in lines
    assert "  demo account: user@example.com / correct horse battery staple" in lines
    assert lines[0].startswith(f"tracemoe: http://127.0.0.1:{base}")


def test_one_emulator_serves_on_its_own_default_port(
    shipped: dict[str, Any], served: list[uvicorn.Config], any_port: None
) -> None:
    done = cli("emulate", "whatanime-ga")
    assert done.returncode == 0, done.stderr
    assert [config.port for config in served] == [whatanime_ga.DEFAULT_PORT] == [8001]


def test_a_busy_default_port_is_one_line_and_exit_2(
    shipped: dict[str, Any], served: list[uvicorn.Config]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        done = cli("emulate", "all", "--port", str(busy))
    assert done.returncode == 2
    error, hint = done.stderr.strip().splitlines()
    assert error == f"anisearch: error: port {busy} on 127.0.0.1 is in use"
    assert hint.startswith("hint: choose another with --port")
    assert served == []


def test_a_busy_port_after_a_free_one_releases_the_free_one(
    shipped: dict[str, Any], served: list[uvicorn.Config]
) -> None:
    base = _free_base(3)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", base + 1))
        sock.listen()
        done = cli("emulate", "all", "--port", str(base))
    assert done.returncode == 2
    assert done.stderr.startswith(f"anisearch: error: port {base + 1} on 127.0.0.1 is in use")
    assert served == []
    assert _is_free(base)  # the socket bound for tracemoe was closed


def test_a_port_pushed_past_the_last_is_refused(
    shipped: dict[str, Any], served: list[uvicorn.Config]
) -> None:
    done = cli("emulate", "all", "--port", "65535")
    assert done.returncode == 2
    assert "moves a port past 65535" in done.stderr


@pytest.mark.parametrize("module", ["starlette", "python_multipart"])
def test_a_missing_piece_of_the_extra_names_the_pip_install(
    module: str, shipped: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def without(name: str, *args: Any, **kwargs: Any) -> Any:
        if name in {module, "multipart"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without)
    monkeypatch.setattr("importlib.import_module", lambda name, package=None: without(name))
    done = cli("emulate", "tracemoe")
    assert done.returncode == 2
    assert f"{module} is missing" in done.stderr
    assert "hint: pip install 'anisearch-gateway[emulator]'" in done.stderr


def test_the_accounts_knob_takes_json_and_its_accounts_are_printed(
    shipped: dict[str, Any], served: list[uvicorn.Config], any_port: None
) -> None:
    done = cli("emulate", "whatanimeisthis", "-o", 'users={"ann@example.com": "hunter2 hunter2"}')
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == ["  demo account: ann@example.com / hunter2 hunter2"]
    assert [config.port for config in served] == [8002]


def test_each_printed_export_enables_its_provider(
    shipped: dict[str, Any], served: list[uvicorn.Config]
) -> None:
    """The variables `emulate` prints, once exported, show every provider enabled at those URLs."""
    base = _free_base(3)
    printed = cli("emulate", "all", "--port", str(base)).stdout
    exports = dict(
        line.split("export ", 1)[1].split("=", 1) for line in printed.splitlines() if "export " in line
    )
    assert set(exports) == {
        "ANISEARCH_TRACEMOE_URL", "ANISEARCH_WHATANIME_GA_URL", "ANISEARCH_WHATANIMEISTHIS_URL",
    }  # fmt: skip
    without = {p["name"]: p for p in json.loads(cli("providers", "--json").stdout)}
    assert without["whatanime-ga"]["enabled"] is False  # the legacy API has no public default URL
    listed = {p["name"]: p for p in json.loads(cli("providers", "--json", env=exports).stdout)}
    for name in SHIPPED:
        assert listed[name]["enabled"] is True, name
        assert listed[name]["base_url"] == exports[f"ANISEARCH_{name.upper().replace('-', '_')}_URL"]


def test_the_declared_entry_points_load_factories_with_distinct_default_ports() -> None:
    """What pyproject registers (names unchanged) resolves to the emulator packages and their ports."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    emulators = declared["anisearch.emulators"]
    packages = {**SHIPPED, "anilist": anilist}  # AniList: the metadata emulator, after the scene searches
    assert set(emulators) == set(packages)
    ports = {}
    for name, target in emulators.items():
        module_name, _, attribute = target.partition(":")
        module = importlib.import_module(module_name)
        assert getattr(module, attribute) is packages[name].create_app
        ports[name] = _emulate.default_port(getattr(module, attribute))
    assert ports == {"tracemoe": 8000, "whatanime-ga": 8001, "whatanimeisthis": 8002, "anilist": 8003}


def test_a_misspelt_emulator_is_called_an_emulator() -> None:
    done = cli("emulate", "tracemo")
    assert done.returncode == 2
    assert "unknown emulator 'tracemo'; known emulators: " in done.stderr
    assert "tracemoe" in done.stderr
