"""What the command writes wherever it writes: an ASCII locale, ``FORCE_COLOR`` in CI, a narrow terminal."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from anisearch_emulators.tracemoe import create_app

pytestmark = pytest.mark.e2e

DEMO = Path(__file__).resolve().parents[1] / "examples" / "tinted-good.jpg"


def environment(url: str, **env: str) -> dict[str, str]:
    """The command's environment: the trace.moe emulator at ``url`` alone, nothing kept between runs."""
    return os.environ | {
        "ANISEARCH_TRACEMOE_URL": url,
        "ANISEARCH_PROVIDERS": "tracemoe",
        "ANISEARCH_METADATA": "off",
        "ANISEARCH_LEDGER": "memory://",
        "ANISEARCH_CACHE": "off",
        **env,
    }


def run(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m anisearch ARGS`` against the trace.moe emulator at ``url``, output as bytes decoded
    leniently (what a reader of the pipe gets)."""
    done = subprocess.run(
        [sys.executable, "-m", "anisearch", *args],
        env=environment(url, **env),
        capture_output=True,
        timeout=120,
        check=False,
    )
    return subprocess.CompletedProcess(
        done.args,
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
    )


@pytest.fixture
def url(live_server: Callable[[Any], Any]) -> str:
    return str(live_server(create_app(quota=10**6, rate_limit=10**6)).url)


ASCII_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""}
NOT_UTF8 = [
    pytest.param(ASCII_LOCALE, id="C-locale"),
    pytest.param({"PYTHONIOENCODING": "ascii"}, id="ascii"),
    pytest.param({"PYTHONIOENCODING": "latin-1"}, id="latin-1"),
]


def test_an_ascii_locale_gets_plain_text_and_ascii_json_never_a_traceback(url: str) -> None:
    text = run(url, "search", str(DEMO), **ASCII_LOCALE)
    assert text.returncode == 0, text.stderr
    assert "Traceback" not in text.stderr
    assert "19:29-19:34" in text.stdout  # the en dash, in ASCII
    as_json = run(url, "search", str(DEMO), "--json", **ASCII_LOCALE)
    assert as_json.returncode == 0, as_json.stderr
    assert as_json.stdout.isascii()
    assert json.loads(as_json.stdout)["hits"][0]["anilist_id"] == 11887


def columns_of(table: list[str]) -> set[tuple[int, ...]]:
    """Where each line of an ASCII table (rich's box for an output that is not UTF-8) divides its columns
    (``|``, or ``+`` on a rule)."""
    return {tuple(at for at, char in enumerate(line) if char in "|+") for line in table}


@pytest.mark.parametrize("encoding", NOT_UTF8)
def test_a_table_stays_aligned_where_the_output_cannot_carry_the_en_dash(
    url: str, encoding: dict[str, str]
) -> None:
    """rich measured the en dash as one cell, then ``\\u2013`` (six) was printed: each scene that spans
    seconds pushed its row's last column five characters right."""
    done = run(url, "search", str(DEMO), "--all", "-n", "5", COLUMNS="120", **encoding)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines()[1:] if "|" in line]
    assert len(rows) == 6  # the head and 5 hits (its rule has no "|")
    assert len(columns_of(rows)) == 1, done.stdout
    assert " 19:29-19:34 " in done.stdout


@pytest.mark.parametrize("encoding", NOT_UTF8)
def test_a_japanese_title_is_escaped_before_the_table_is_laid_out(
    url: str, live_server: Callable[[Any], Any], encoding: dict[str, str]
) -> None:
    """A title the output cannot carry is escaped (``\\u30b3``) before rich measures it, so its column is
    as wide as what is printed (rich gave it 14 cells, two a character, and printed 42)."""
    from anisearch_emulators.whatanimeisthis import create_app as whatanimeisthis_app

    native = "ココロコネクト"
    history = [
        {"anilist_id": 11887, "seconds_ago": 60, "title": {"native": native}},
        {"anilist_id": 21703, "seconds_ago": 120, "title": {"romaji": "Fune wo Amu"}},
    ]
    site = str(live_server(whatanimeisthis_app(history=history)).url)
    providers = {"ANISEARCH_PROVIDERS": "whatanimeisthis", "ANISEARCH_WHATANIMEISTHIS_URL": site}
    done = run(url, "recent", COLUMNS="150", **providers, **encoding)
    assert done.returncode == 0, done.stderr
    table = [line for line in done.stdout.splitlines() if "|" in line]
    assert len(table) == 4  # the head, its rule and 2 searches
    assert len(columns_of(table)) == 1, done.stdout
    assert f"| {native.encode('ascii', 'backslashreplace').decode()} |" in done.stdout


def on_a_terminal(url: str, *args: str, **env: str) -> str:
    """``python -m anisearch ARGS`` with stdout and stderr on one terminal (a pty, so the progress bar
    runs), as :func:`run` sets it up; everything written there, decoded leniently."""
    import pty
    import select

    controller, terminal = pty.openpty()
    command = [sys.executable, "-m", "anisearch", *args]
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal, env=environment(url, **env)
    )
    os.close(terminal)
    written = bytearray()
    try:
        while select.select([controller], [], [], 60)[0]:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the command ended and closed the terminal
                break
            if not chunk:
                break
            written += chunk
    finally:
        process.wait(timeout=60)
        os.close(controller)
    return written.decode("utf-8", "replace")


NAMES = ["say \u201chi\u201d.jpg", "a\u2013b.jpg", "a-b.jpg"]
"""Screenshots whose names hold characters an ASCII output cannot carry, one a look-alike of another's."""


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = tmp_path / "shots"
    folder.mkdir()
    for name in NAMES:
        shutil.copy(DEMO, folder / name)
    return folder


def test_a_folders_json_lines_above_the_progress_bar_stay_json_naming_each_file(
    url: str, shots: Path
) -> None:
    """With the progress bar on a terminal, rich stands a proxy in for stdout: the lines were taken as
    UTF-8, and the ASCII output wrote \u201c as a bare quote (invalid JSON) and \u2013 as "-" (another
    file's name)."""
    import re

    written = on_a_terminal(url, "search", str(shots), "--json", PYTHONIOENCODING="ascii")
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", written).replace("\r", "\n")
    lines = [line[line.index('{"input"') :] for line in plain.splitlines() if '{"input"' in line]
    assert sorted(json.loads(line)["input"] for line in lines) == sorted(str(shots / n) for n in NAMES), (
        written
    )


def test_file_names_are_escaped_never_written_as_a_look_alike(url: str, shots: Path) -> None:
    done = run(url, "search", str(shots), PYTHONIOENCODING="ascii")
    assert done.returncode == 0, done.stderr
    labels = sorted(
        line.split(": ", 1)[0] for line in done.stdout.splitlines() if line.startswith(str(shots))
    )
    assert labels == sorted(str(shots / n).encode("ascii", "backslashreplace").decode() for n in NAMES)


def test_names_of_two_files_never_look_alike_where_their_difference_cannot_be_shown(
    url: str, tmp_path: Path
) -> None:
    """``café.jpg`` and a name holding the byte 0xe9 (not UTF-8) both came out as ``caf\\xe9.jpg``."""
    folder = tmp_path / "names"
    folder.mkdir()
    shutil.copy(DEMO, folder / "caf\u00e9.jpg")
    shutil.copy(DEMO, os.fsdecode(bytes(folder) + b"/caf\xe9.jpg"))
    done = run(url, "search", str(folder), PYTHONIOENCODING="ascii")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith(str(folder))]
    labels = sorted(line.split(": ", 1)[0] for line in lines)
    assert labels == [f"{folder}/caf\\u00e9.jpg", f"{folder}/caf\\xe9.jpg"]


def test_a_backslash_or_an_invisible_character_in_a_name_is_escaped(url: str, tmp_path: Path) -> None:
    """A name holding a backslash printed like another name's escaped byte (``lit\\xe9.jpg``), and a
    zero-width space printed as nothing, in UTF-8 too."""
    folder = tmp_path / "names"
    folder.mkdir()
    for name in (b"lit\\xe9.jpg", b"lit\xe9.jpg", "zw\u200bsp.jpg".encode(), b"zwsp.jpg"):
        shutil.copy(DEMO, os.fsdecode(bytes(folder) + b"/" + name))
    done = run(url, "search", str(folder), PYTHONIOENCODING="utf-8")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith(str(folder))]
    labels = sorted(line.split(": ", 1)[0].removeprefix(f"{folder}/") for line in lines)
    assert labels == sorted(["lit\\\\xe9.jpg", "lit\\xe9.jpg", "zw\\u200bsp.jpg", "zwsp.jpg"])


def test_an_upstreams_error_in_a_folders_lines_is_prose_in_ascii(
    live_server: Callable[[Any], Any], shots: Path
) -> None:
    """Written where the output cannot carry them, an upstream's dashes and quotes in an error are plain
    ASCII (as in a one-file search), not escapes: only names are escaped."""
    from anisearch_emulators.tracemoe import InjectedFailure

    refusal = InjectedFailure(400, {"error": "Failed to process image \u2013 it\u2019s not a picture\u2026"})
    failing = str(live_server(create_app(quota=10**6, rate_limit=10**6, failures=[refusal] * 10)).url)
    done = run(failing, "search", str(shots), PYTHONIOENCODING="ascii")
    errors = [line for line in done.stdout.splitlines() if ": error: " in line]
    assert errors, done.stdout + done.stderr
    for line in errors:
        assert "Failed to process image - it's not a picture..." in line, line


def test_a_folders_error_line_names_its_file_once(url: str, tmp_path: Path) -> None:
    """A name the error message spells escaped (a tab as ``\\t``) was not taken off the message: the line
    named the file twice, two ways."""
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "tab\there.jpg").write_text("this is text, not a picture")
    shutil.copy(DEMO, folder / "good.jpg")
    done = run(url, "search", str(folder))
    (line,) = [line for line in done.stdout.splitlines() if ": error: " in line]
    assert line.count("here.jpg") == 1, line


def test_stdins_error_line_names_it_once(url: str) -> None:
    """``-`` read from a pipe is ``<stdin>`` in its error: the line said ``-: error: <stdin>: ...``."""
    done = subprocess.run(
        [sys.executable, "-m", "anisearch", "search", "-", str(DEMO)],
        input=b"this is text, not a picture",
        env=environment(url),
        capture_output=True,
        timeout=120,
        check=False,
    )
    (line,) = [line for line in done.stdout.decode().splitlines() if ": error: " in line]
    assert line.startswith("-: error: ")
    assert "<stdin>" not in line, line


def test_a_title_holding_brackets_is_shown_as_it_is_not_read_as_markup() -> None:
    """``[/Michi]`` in a title raised rich's MarkupError (exit 1, "no match"); ``[bold]`` was applied."""
    from rich.console import Console

    from anisearch._cli._render import hits_table
    from anisearch._models import Hit, SearchResult, Title

    for title in ("Kokoro Connect [/Michi]", "[bold]Kokoro[/bold] Connect"):
        hit = Hit(provider="tracemoe", anilist_id=11887, similarity=0.97, title=Title(romaji=title))
        table, _ = hits_table(
            SearchResult(hits=[hit], provider="tracemoe"), threshold=0.9, limit=5, show_all=False
        )
        console = Console(width=200, record=True, file=io.StringIO())
        console.print(table)
        assert console.export_text().startswith(f"{title}, - (97.0 %, tracemoe)")


def test_a_title_holding_an_escape_sequence_is_shown_escaped_in_every_line_of_a_search() -> None:
    """An upstream's title (or release file name) reached the terminal as sent: ESC sequences could clear
    the screen or retitle the window, a line break forge a line. The table, the headline and the no-match
    line show it escaped."""
    from rich.console import Console

    from anisearch._cli._render import headline, hits_table, no_match_text
    from anisearch._models import Hit, SearchResult, Title

    sent = "Evil\x1b[2J\x1b]0;pwned\x07\r\nforged"
    for hit in (
        Hit(provider="tracemoe", anilist_id=11887, similarity=0.97, title=Title(romaji=sent)),
        Hit(provider="tracemoe", similarity=0.97, filename=sent + ".mp4"),
    ):
        result = SearchResult(hits=[hit], provider="tracemoe")
        table, _ = hits_table(result, threshold=0.9, limit=5, show_all=False)
        console = Console(width=200, record=True, file=io.StringIO())
        console.print(table)
        lines = [headline(hit), no_match_text(result, threshold=0.99), *console.export_text().splitlines()]
        assert not [line for line in lines if {"\x1b", "\x07", "\r", "\n"} & set(line)]
        assert lines[0].startswith("Evil\\x1b")
        assert not [line for line in lines if line.lstrip().startswith("forged")]
    titled = Hit(provider="tracemoe", anilist_id=1, similarity=0.97, title=Title(romaji=sent))
    assert headline(titled).startswith("Evil\\x1b[2J\\x1b]0;pwned\\x07\\r\\nforged, ")
    for kept in (  # what a title may hold and a terminal shows: an ideographic or no-break space, a ZWJ
        "\u30bd\u30fc\u30c9\u30a2\u30fc\u30c8\u30fb\u30aa\u30f3\u30e9\u30a4\u30f3\u3000\u30a2\u30ea\u30b7\u30bc\u30fc\u30b7\u30e7\u30f3",
        "Re:Zero\u00a0kara Hajimeru",
        "\U0001f468\u200d\U0001f469\u200d\U0001f467 family",
        "\u05e9\u05dc\u05d5\u05dd\u200f (2020)",
    ):
        shown = headline(Hit(provider="tracemoe", anilist_id=1, similarity=0.97, title=Title(romaji=kept)))
        assert shown.startswith(f"{kept}, "), shown


def test_typographic_punctuation_is_written_in_ascii_and_what_the_encoding_has_is_kept() -> None:
    from anisearch._cli._common import unencodable

    text = "19:29\u201319:34 \u2014 \u201cKokoro\u201d\u2026 7000\u00d77000\u00a0\u00e9 \u30b3"
    assert text.encode("ascii", unencodable()) == b'19:29-19:34 -- "Kokoro"... 7000x7000 \\xe9 \\u30b3'
    assert text.encode("latin-1", unencodable()).decode("latin-1") == (
        '19:29-19:34 -- "Kokoro"... 7000\u00d77000\u00a0\u00e9 \\u30b3'
    )


def test_force_color_never_reaches_json_nor_moves_results_off_stdout(url: str, tmp_path: Path) -> None:
    """CI systems set FORCE_COLOR: ``--json | jq .`` must still parse, and a folder's results must still be
    on stdout (they went to stderr, above a progress bar drawn there)."""
    quota = run(url, "quota", "--json", FORCE_COLOR="1")
    assert quota.returncode == 0, quota.stderr
    json.loads(quota.stdout)
    shots = tmp_path / "shots"
    shots.mkdir()
    for n in range(3):
        shutil.copy(DEMO, shots / f"{n}.jpg")
    batch = run(url, "search", str(shots), "--json", FORCE_COLOR="1")
    assert batch.returncode == 0, batch.stderr
    inputs = sorted(json.loads(line)["input"] for line in batch.stdout.splitlines())
    assert inputs == [str(shots / f"{n}.jpg") for n in range(3)]


def test_a_narrow_terminal_gets_a_block_per_hit_with_its_title(url: str) -> None:
    done = run(url, "search", str(DEMO), "--all", "-n", "2", COLUMNS="40")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1] == "Kokoro Connect"  # the title heads the first hit's block: never squeezed out
    assert "  scene     19:29\u201319:34" in lines
    assert "more hit(s) not shown (--limit N shows them)" in done.stderr  # the notes, as in the table
