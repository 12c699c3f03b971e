"""The documentation site: every example on it runs, and the site builds with ``mkdocs build --strict``.

Python blocks run as programs (a ``text`` block after one is its promised output), ``console`` blocks run
their ``anisearch`` commands, ``toml`` blocks must load as settings, and ``bash`` blocks may only install
this distribution, export documented variables or run the README's two commands.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.cli_runner import run_in_process
from tests.conftest import REPO
from tests.snippets import Block, blocks, commands, run_console, run_python, shown

import anisearch
from anisearch._limits import MAX_DOWNLOAD_BYTES, MAX_SOURCE_BYTES
from anisearch._source import too_large
from anisearch_emulators.anilist import create_app as anilist_app
from anisearch_emulators.tracemoe import create_app as tracemoe_app
from anisearch_emulators.whatanimeisthis import create_app as whatanimeisthis_app

pytestmark = pytest.mark.e2e

DOCS = REPO / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
ALL = [block for page in PAGES for block in blocks(page)]
RUNNABLE = {"python", "console", "bash", "toml", "mermaid", "text"}
CONFIG_FILE = re.compile(r"ANISEARCH_[A-Z_]+")


EMULATOR_PORTS = {
    "ANISEARCH_TRACEMOE_URL": 8000,
    "ANISEARCH_WHATANIMEISTHIS_URL": 8002,
    "ANISEARCH_ANILIST_URL": 8003,
}
"""The port ``anisearch emulate all`` serves each emulator of the docs' world on, by its variable."""


def as_documented() -> dict[str, str]:
    """Each emulator's URL in the docs' world (a free port), and the URL an example shows for it."""
    return {os.environ[name]: f"http://127.0.0.1:{port}" for name, port in EMULATOR_PORTS.items()}


@pytest.fixture
def emulated(live_server: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The docs' world: the repository as working directory, the upstreams on loopback; an emulator's
    default port in an example (8000 trace.moe, 8002 whatanimeisthis, 8003 AniList) means the local one."""
    tracemoe = live_server(tracemoe_app())
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", tracemoe.url)
    monkeypatch.setenv("ANISEARCH_WHATANIMEISTHIS_URL", live_server(whatanimeisthis_app()).url)
    monkeypatch.setenv("ANISEARCH_ANILIST_URL", live_server(anilist_app()).url)  # titles, on loopback
    monkeypatch.delenv("ANISEARCH_METADATA")
    monkeypatch.chdir(REPO)
    return tracemoe


def test_every_page_is_in_the_navigation_and_every_block_is_checked() -> None:
    nav = (REPO / "mkdocs.yml").read_text()
    for page in PAGES:
        assert str(page.relative_to(DOCS)) in nav
    assert {block.lang for block in ALL} <= RUNNABLE
    assert sum(block.lang == "python" for block in ALL) >= 7


def test_the_configuration_reference_lists_every_setting() -> None:
    reference = (DOCS / "configuration.md").read_text()
    for name in anisearch.Settings.model_fields:
        if name != "provider_options":  # given in code only; shown in its own section
            assert f"| `{name}` | `ANISEARCH_{name.upper()}` |" in reference, name


def test_the_examples_readme_says_which_tests_read_the_demo_frame() -> None:
    """``examples/README.md`` said that the test suite does not read its copy of trace.moe's demo frame,
    while the end-to-end tests search it (someone trusting that could replace or drop the file)."""
    readers = [
        path
        for path in (REPO / "tests").rglob("test_*.py")
        if re.search(r'"examples" / "tinted-good\.jpg"|examples/tinted-good\.jpg', path.read_text("utf-8"))
    ]
    assert readers
    readme = " ".join((REPO / "examples" / "README.md").read_text(encoding="utf-8").split())
    assert "does not read this copy" not in readme
    assert "`bash scripts/quickstart.sh` and some tests read this copy" in readme
    assert "the replay tests read the recordings and screenshots in the shared samples directory" in readme


PYTHON = [b for b in ALL if b.lang == "python"]


@pytest.mark.parametrize("block", PYTHON, ids=[b.where for b in PYTHON])
def test_python_example(block: Block, emulated: Any, request: pytest.FixtureRequest) -> None:
    if "ANISEARCH_LEDGER" in block.code or "shared Redis" in block.code or "SceneBot" in block.code:
        request.getfixturevalue("monkeypatch").setenv(
            "ANISEARCH_LEDGER", request.getfixturevalue("redis_url")
        )
    code = block.code.replace("http://127.0.0.1:8000", emulated.url)
    run_python(Block(block.lang, code, block.where, block.output))


CONSOLE = [b for b in ALL if b.lang == "console"]


@pytest.mark.parametrize("block", CONSOLE, ids=[b.where for b in CONSOLE])
def test_console_example(block: Block, emulated: Any) -> None:
    run_console(block, shown_as=as_documented())


WHOLE = ("anisearch quota tracemoe", "anisearch providers --json")
"""The examples of ``docs/cli.md`` that show a command's whole output."""


def test_the_quota_and_providers_examples_show_the_whole_output(emulated: Any) -> None:
    """An example's lines need only start lines of the output, in order: ``docs/cli.md`` passed while it
    showed ``anisearch quota tracemoe`` as its title alone and ``anisearch providers --json`` as ``[``."""
    shown_on_the_page = {
        command: expected
        for block in CONSOLE
        if block.where.startswith("cli.md:")
        for command, expected in commands(block)
    }
    for command in WHOLE:
        done = run_in_process(*shlex.split(command)[1:])
        assert done.returncode == 0, done.stderr
        printed = shown(done.stdout, as_documented()).splitlines()
        assert [line.rstrip() for line in shown_on_the_page[command]] == [line.rstrip() for line in printed]


def test_the_cli_page_gives_the_input_size_limits_in_the_words_of_the_error() -> None:
    """``docs/cli.md`` listed every video suffix a folder search takes without saying that an input over
    100 MiB (most episode files) is refused."""
    page = " ".join((DOCS / "cli.md").read_text(encoding="utf-8").split())
    assert f"An input is read up to {MAX_SOURCE_BYTES // 2**20} MiB" in page
    assert str(too_large("ep05.mkv: ", 150 * 2**20, MAX_SOURCE_BYTES)) in page
    assert f"A URL is downloaded up to {MAX_DOWNLOAD_BYTES // 2**20} MiB" in page


TOML = [b for b in ALL if b.lang == "toml"]


@pytest.mark.parametrize("block", TOML, ids=[b.where for b in TOML])
def test_toml_example_is_a_valid_config_file(
    block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(block.code)
    monkeypatch.setenv("ANISEARCH_CONFIG", str(path))
    data = tomllib.loads(block.code)
    settings = anisearch.Settings.load()
    for key, value in data.items():
        if key == "server":  # the gateway's own table (anisearch serve)
            from anisearch._server import ServerSettings

            assert set(value) <= set(ServerSettings.model_fields)
            ServerSettings.load()
        elif isinstance(value, dict):
            assert key in anisearch.available_providers()
            assert settings.provider_config(key) == value
            with anisearch.Client(settings) as client:  # the provider accepts its table
                assert key in [info.name for info in client.providers()]
        else:
            assert key in anisearch.Settings.model_fields, key


BASH = [b for b in ALL if b.lang == "bash"]
DOCUMENTED = set(CONFIG_FILE.findall((DOCS / "configuration.md").read_text()))


@pytest.mark.parametrize("block", BASH, ids=[b.where for b in BASH])
def test_bash_example_only_does_what_is_checked(block: Block) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for line in filter(None, (raw.split("#")[0].strip() for raw in block.code.splitlines())):
        words = line.split()
        if words[:2] == ["pip", "install"]:
            name, _, extras = words[2].strip("'").partition("[")
            assert name == project["name"]
            assert set(filter(None, extras.rstrip("]").split(","))) <= set(project["optional-dependencies"])
        elif words[0] == "export":
            variable = words[1].split("=")[0]
            assert variable in DOCUMENTED, f"{block.where}: {variable} is not in the configuration reference"
        else:
            readme = blocks(REPO / "README.md")[0].code
            assert line in [part.split("#")[0].strip() for part in readme.splitlines()], line


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """``mkdocs build --strict`` (the ``docs`` extra, part of ``dev``): a broken link or reference fails."""
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "match_at" in api
    assert "QuotaExhaustedError" in api


def test_every_python_example_passes_strict_type_checking(tmp_path: Path) -> None:
    """What a user copies from the README or the docs passes their ``mypy --strict`` as it stands."""
    from mypy import api

    examples = [
        block for page in [REPO / "README.md", *PAGES] for block in blocks(page) if block.lang == "python"
    ]
    files = []
    for number, block in enumerate(examples):
        path = tmp_path / f"example_{number}.py"
        path.write_text(block.code)
        files.append(str(path))
    report, errors, status = api.run(["--strict", "--cache-dir", str(REPO / ".mypy_cache"), *files])
    assert status == 0, report + errors
