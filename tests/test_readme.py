"""The README as a user follows it: its commands and every snippet, against the emulators over loopback."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import REPO, free_port
from tests.snippets import Block, blocks, run_console, run_python

from anisearch_emulators.anilist import create_app as anilist_app
from anisearch_emulators.tracemoe import create_app as tracemoe_app
from anisearch_emulators.whatanimeisthis import create_app as whatanimeisthis_app

pytestmark = pytest.mark.e2e

README = blocks(REPO / "README.md")
PYTHON = [b for b in README if b.lang == "python"]
CONSOLE = [b for b in README if b.lang == "console"]
BASH = [b for b in README if b.lang == "bash"]


@pytest.fixture
def emulated(live_server: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The README's world: the repository as the working directory, the upstreams on loopback."""
    tracemoe = live_server(tracemoe_app())
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", tracemoe.url)
    monkeypatch.setenv("ANISEARCH_WHATANIMEISTHIS_URL", live_server(whatanimeisthis_app()).url)
    monkeypatch.setenv("ANISEARCH_ANILIST_URL", live_server(anilist_app()).url)  # titles, on loopback
    monkeypatch.delenv("ANISEARCH_METADATA")
    monkeypatch.chdir(REPO)
    return tracemoe


def test_the_readme_has_its_snippets() -> None:
    assert len(PYTHON) >= 4
    assert CONSOLE
    assert BASH[0].code.splitlines()[0].startswith("bash scripts/quickstart.sh")


@pytest.mark.parametrize("block", PYTHON, ids=[b.where for b in PYTHON])
def test_python_snippet(block: Block, emulated: Any) -> None:
    run_python(block)


def test_the_except_star_snippet_reports_a_spent_quota(
    live_server: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    block = next(b for b in PYTHON if "except*" in b.code)
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", live_server(tracemoe_app(quota=0)).url)
    monkeypatch.chdir(REPO)
    printed = run_python(block)
    assert printed.startswith("tracemoe: quota spent, frees at ")


def test_the_except_star_snippet_names_an_unreachable_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    block = next(b for b in PYTHON if "except*" in b.code)
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.chdir(REPO)
    assert run_python(block) == "cannot reach: tracemoe\n"


@pytest.mark.parametrize("block", CONSOLE, ids=[b.where for b in CONSOLE])
def test_console_snippet(block: Block, emulated: Any) -> None:
    run_console(block)


def test_the_no_match_example_exits_1(emulated: Any) -> None:
    block = next(b for b in CONSOLE if "no confident match" in b.code)
    assert run_console(block) == [1]


def test_the_install_lines_name_this_distribution_and_its_extras() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    install = next(b for b in BASH if "pip install" in b.code)
    for line in install.code.splitlines():
        name, _, extras = line.split()[2].strip("'").partition("[")
        assert name == project["name"] == "anisearch-gateway"
        assert set(filter(None, extras.rstrip("]").split(","))) <= set(project["optional-dependencies"])


def _environment(**extra: str) -> dict[str, str]:
    """The test's environment with this checkout first on the import path and its scripts on PATH."""
    path = os.pathsep.join([str(REPO), str(REPO / "providers"), os.environ.get("PYTHONPATH", "")])
    scripts = str(Path(sys.executable).parent)
    return {**os.environ, "PYTHONPATH": path, "PATH": f"{scripts}{os.pathsep}{os.environ['PATH']}", **extra}


def _quickstart(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The quickstart script run as ``command`` from ``cwd``, minus the pip install the test run has."""
    return subprocess.run(
        command,
        cwd=cwd,
        env=_environment(ANISEARCH_QUICKSTART_NO_INSTALL="1", ANISEARCH_QUICKSTART_PORT=str(_quiet_ports(1))),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_first_command_identifies_the_demo_frame() -> None:
    """``bash scripts/quickstart.sh`` (minus the pip install, which the test run already has)."""
    done = _quickstart(BASH[0].code.splitlines()[0].split("#")[0].split(), REPO)
    assert done.returncode == 0, done.stderr
    headline = done.stdout.splitlines()[0]
    assert headline.startswith("Kokoro Connect, episode 5, 19:29")
    assert "tracemoe" in headline


def test_the_quickstart_finds_an_image_named_relative_to_where_it_is_run(tmp_path: Path) -> None:
    """``bash path/to/scripts/quickstart.sh shot.jpg`` from the folder holding ``shot.jpg``: the script
    looked for it in the repository (it moves there first) and said there is no such file."""
    shutil.copyfile(REPO / "examples" / "tinted-good.jpg", tmp_path / "shot.jpg")
    done = _quickstart(["bash", str(REPO / "scripts" / "quickstart.sh"), "shot.jpg"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("Kokoro Connect, episode 5, 19:29")
    assert f"anisearch search {tmp_path / 'shot.jpg'} -p tracemoe" in done.stderr


def test_the_second_command_is_what_ci_runs() -> None:
    second = BASH[0].code.splitlines()[1].split("#")[0].strip()
    assert second == "python -m pytest -n auto --cov"
    # CI may set variables for the run (it requires the shared recordings), never change the command.
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(rf"^(?:[A-Z_]+=\S+ )*{re.escape(second)}$", ci, re.MULTILINE)


def test_developing_offline_runs_as_pasted() -> None:
    """The emulators in the background, a search against them, and the job stopped."""
    block = next(b for b in BASH if "anisearch emulate all" in b.code)
    base = _quiet_ports(4)
    script = re.sub(r"\b800([0-3])\b", lambda m: str(base + int(m[1])), block.code)
    wait = (  # the emulators start in the background; a loaded machine may need more than the sleep
        f"python -c 'import socket, time\n"
        f"for _ in range(300):\n"
        f'    try: socket.create_connection(("127.0.0.1", {base}), 0.2).close(); break\n'
        f"    except OSError: time.sleep(0.1)'"
    )
    lines = script.splitlines()
    # The README gives the emulators a moment to start (a sleep); here the port is polled instead, which
    # is what the sleep waits for, without its fixed seconds.
    (pause,) = (index for index, line in enumerate(lines) if re.match(r"sleep \d", line))
    lines[pause] = wait
    # set -e stops at a failing line: the trap still stops the background emulators
    script = "set -e\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + "\n".join(lines)
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=REPO,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Kokoro Connect, episode 5, 19:29" in done.stdout


def _quiet_ports(count: int) -> int:
    """The first of ``count`` free ports below the kernel's ephemeral range: no other test's port-0 bind
    (the emulators of the tests running beside this one) can take them between this check and their use."""
    import random

    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        base = random.randrange(20000, low - count)
        if all(_free(base + offset) for offset in range(count)):
            return base


def _free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _published_description(tmp_path: Path) -> str:
    """The description PyPI shows: what the build backend writes into the wheel's METADATA."""
    from email import message_from_string

    from hatchling.build import prepare_metadata_for_build_wheel

    previous = Path.cwd()
    os.chdir(REPO)  # the backend reads pyproject.toml from the working directory, as pip runs it
    try:
        folder = prepare_metadata_for_build_wheel(str(tmp_path))
    finally:
        os.chdir(previous)
    metadata = message_from_string((tmp_path / folder / "METADATA").read_text(encoding="utf-8"))
    assert metadata["Description-Content-Type"] == "text/markdown"
    return str(metadata.get_payload())


def test_the_readme_on_pypi_links_to_pages_that_exist(tmp_path: Path) -> None:
    """PyPI shows the README away from the repository: a relative link there would lead nowhere. Each is
    published pointing at the documentation site (a page of docs/) or the repository, at a page or file
    this checkout has; the text is otherwise the README's."""
    urls = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["urls"]
    site, files = urls["Documentation"], urls["Source"] + "/blob/main/"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    published = _published_description(tmp_path)
    targets = re.findall(r"\]\(([^)\s]+)\)", published)
    assert len(targets) == len(re.findall(r"\]\(([^)\s]+)\)", readme)) >= 5
    for target in targets:
        assert target.startswith(("https://", "http://")), target
        if target.startswith(site):
            page = target.removeprefix(site).partition("#")[0].rstrip("/") or "index"
            assert (REPO / "docs" / f"{page}.md").is_file(), target
        elif target.startswith(files):
            assert (REPO / target.removeprefix(files)).exists(), target
    linked_back = re.sub(re.escape(site) + r"([^)#]*?)/?(?=[)#])", r"docs/\1.md", published)
    assert linked_back.replace(files, "").replace("docs/.md", "docs/index.md") == readme.rstrip("\n") + "\n"
