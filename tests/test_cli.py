"""The `anisearch` command as a person meets it: help, errors, confident answers, layouts, batch, emulate.

In process (typer's CliRunner, see ``cli_runner``) against the emulators, reached in process through
``httpx.ASGITransport`` (the ``emulated`` fixture); a few tests keep a real process or a loopback server.
"""

from __future__ import annotations

import gc
import json
import logging
import re
import shutil
import socket
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageEnhance
from tests.cli_runner import run_in_process as cli
from tests.cli_runner import run_on_a_terminal
from tests.conftest import WeakerWhatAnimeIsThis

import anisearch
from anisearch import QuotaExhaustedError
from anisearch._cli import _common, _emulate, _render, _search
from anisearch._verdict import reason
from anisearch_emulators.tracemoe import create_app as tracemoe_app
from anisearch_emulators.whatanimeisthis import create_app as whatanimeisthis_app

pytestmark = pytest.mark.e2e

COMMANDS = [
    ["search"],
    ["quota"],
    ["providers"],
    ["rankings"],
    ["recent"],
    ["credits"],
    ["login"],
    ["logout"],
    ["emulate"],
    ["keys"],
    ["keys", "list"],
    ["keys", "create"],
    ["cache"],
    ["cache", "info"],
    ["cache", "clear"],
    [],
]


def frames(folder: Path, samples: Path, count: int) -> list[Path]:
    """``count`` different screenshots of the same scene (brightness and crop vary), half JPEG, half PNG."""
    image = Image.open(samples / "tinted-good.jpg").convert("RGB")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        variant = ImageEnhance.Brightness(image).enhance(0.95 + i * 0.005).crop((i, i, 640 - i, 360 - i))
        path = folder / f"frame{i:02d}.{'png' if i % 2 else 'jpg'}"
        variant.save(path)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------- help


def test_version() -> None:
    done = cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"anisearch {anisearch.__version__} (distribution anisearch-gateway)"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "anisearch")
def test_every_help_has_examples_and_plain_flags(command: list[str]) -> None:
    done = cli(*command, "-h")
    assert done.returncode == 0, done.stderr
    assert "Examples:" in done.stdout
    assert "$ anisearch" in done.stdout
    assert "<bool>" not in done.stdout
    assert "list[str]" not in done.stdout
    assert all(len(line) <= 80 for line in done.stdout.splitlines())


def test_the_command_list_cuts_no_summary() -> None:
    listing = cli("-h").stdout.split("Commands:")[1].split("Examples:")[0]
    assert "..." not in listing
    assert len(listing.strip().splitlines()) == 12  # with serve


def test_search_help_lists_the_providers_and_the_threshold() -> None:
    text = " ".join(cli("search", "-h").stdout.split())
    assert "tracemoe, whatanimeisthis, whatanime-ga" in text
    assert "[default: 0.9]" in text
    assert "IMAGE|URL|DIR|-..." in text


def test_the_threshold_in_the_help_is_the_librarys() -> None:
    assert _search.DEFAULT_MIN_SIMILARITY == anisearch.DEFAULT_MIN_SIMILARITY


def test_a_bad_flag_is_one_error_line_and_a_hint() -> None:
    done = cli("search", "x.jpg", "--jsn")
    assert done.returncode == 2
    error, hint = done.stderr.strip().splitlines()
    assert error.startswith("anisearch: error: No such option: --jsn")
    assert hint == "hint: 'anisearch search -h' shows the options and examples"


def test_json_is_a_flag(tracemoe: Any) -> None:
    done = cli("quota", "--json", "true")
    assert done.returncode == 2
    assert "unknown provider 'true'" in done.stderr
    quotas = json.loads(cli("quota", "--json").stdout)
    assert {q["provider"] for q in quotas} == {"tracemoe"}


def test_an_unreachable_provider_is_named_with_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _common_free_port()
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", f"http://127.0.0.1:{port}")
    done = cli("search", str(Path("examples/tinted-good.jpg").resolve()), "-p", "tracemoe")
    assert done.returncode == 4
    error, hint = done.stderr.strip().splitlines()
    assert f"tracemoe failed: cannot reach 127.0.0.1:{port}" in error
    assert hint.startswith(f"hint: is tracemoe at 127.0.0.1:{port} running?")


def test_a_name_that_does_not_resolve_points_at_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(host: Any, *_: Any, **__: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)  # no lookup leaves the machine
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", "http://trace.example:8080")
    done = cli("search", str(Path("examples/tinted-good.jpg").resolve()), "-p", "tracemoe", "--no-cache")
    assert done.returncode == 4
    error, hint = done.stderr.strip().splitlines()
    assert "tracemoe failed: cannot reach trace.example:8080" in error
    assert hint == "hint: trace.example:8080 is not a name this machine resolves: check the network and DNS"


def _common_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_a_bad_key_is_exit_5_in_search_as_in_quota(
    tracemoe: Any, samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANISEARCH_TRACEMOE_KEY", "not-a-key")
    searched = cli("search", str(samples / "tinted-good.jpg"), "--no-cache")
    refreshed = cli("quota", "--refresh")
    assert (searched.returncode, refreshed.returncode) == (5, 5), searched.stderr + refreshed.stderr
    for done in (searched, refreshed):
        assert done.stderr.startswith("anisearch: error: ")
        assert "hint: check the credentials for tracemoe: its API key or token\n" in done.stderr
        assert "anisearch login" not in done.stderr  # trace.moe has no sign-in


def test_a_bad_key_stops_a_batch_at_its_first_refusal(
    emulated: Callable[[Any], Any], samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong key is wrong for every input: a folder search stops at the first refusal (exit 5) instead of
    sending one doomed request per file; a key refused where another provider answers stops nothing."""
    frames(tmp_path / "shots", samples, 12)
    trace, fallback = emulated(tracemoe_app()), emulated(whatanimeisthis_app())
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", trace.url)
    monkeypatch.setenv("ANISEARCH_WHATANIMEISTHIS_URL", fallback.url)
    monkeypatch.setenv("ANISEARCH_TRACEMOE_KEY", "not-a-key")
    shots = str(tmp_path / "shots")
    refused = cli("search", shots, "-p", "tracemoe", "--jobs", "2", "--no-cache", "--json")
    assert refused.returncode == 5, refused.stderr
    assert trace.app.state.emulator.search_requests <= 2  # the searches in flight when the first was refused
    assert refused.stdout == ""
    assert refused.stderr.startswith(
        "anisearch: error: every provider failed: tracemoe failed: Invalid API key"
    )
    assert "hint: check the credentials for tracemoe: its API key or token\n" in refused.stderr
    few = str(tmp_path / "few")  # within whatanimeisthis's 5 guest searches a day
    frames(tmp_path / "few", samples, 3)
    answered = cli("search", few, "-p", "tracemoe", "-p", "whatanimeisthis", "--no-cache", "--json")
    lines = [json.loads(line) for line in answered.stdout.splitlines()]
    assert answered.returncode in {0, 1}, answered.stderr
    assert [line.get("provider") for line in lines] == ["whatanimeisthis"] * 3
    assert "3 input(s) in" in answered.stderr


def test_retry_chatter_only_with_verbose(
    emulated: Callable[[Any], Any],
    samples: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from anisearch_emulators.tracemoe import InjectedFailure

    busy = InjectedFailure(503, {"error": "Error: Search queue is full"})
    for verbose in (False, True):
        server = emulated(tracemoe_app(failures=[busy]))
        monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", server.url)
        args = ["search", str(samples / "tinted-good.jpg"), "-p", "tracemoe", "--no-cache"]
        done = cli(*(["-v"] if verbose else []), *args)  # -v before the command counts too
        assert done.returncode == 0, done.stderr
        if verbose:  # a full queue is one backoff shared by every search: this one waits it out, says so
            assert re.search(r"waiting [\d.]+ s for tracemoe: Error: Search queue is full", done.stderr)
            assert re.search(r"tracemoe ok in \d+\.\d\d s", done.stderr)
            assert done.stderr.count("tracemoe ok") == 1  # each attempt once, with its time
            # into a pipe or a file, one whole line per record: grep finds the URL
            assert re.search(
                rf"^[\d:.]+ INFO +HTTP Request: POST {re.escape(server.url)}/search\S* \"HTTP/1.1 ",
                done.stderr,
                re.MULTILINE,
            )
        else:
            assert "waiting" not in done.stderr
            assert "retry" not in done.stderr
            assert "stamina" not in done.stderr
    logging.getLogger("stamina").handlers.clear()


def test_a_batch_names_its_input_on_every_verbose_line(
    emulated: Callable[[Any], Any], samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With -j 2 the searches' -v lines interleave: each line of a batch names the input it is about, so a
    retry or a weak answer can be told apart; a single input's lines stay as they were."""
    from anisearch_emulators.tracemoe import InjectedFailure

    server = emulated(tracemoe_app(failures=[InjectedFailure(503, {"error": "Error: Search queue is full"})]))
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", server.url)
    frames(tmp_path / "shots", samples, 3)
    names = sorted(str(path) for path in (tmp_path / "shots").iterdir())
    done = cli("search", str(tmp_path / "shots"), "-p", "tracemoe", "--no-cache", "-v", "-j", "2")
    assert done.returncode in {0, 1}, done.stderr
    lines = done.stderr.splitlines()
    attempts = [line for line in lines if re.search(r"tracemoe \w+ in \d+\.\d\d s", line)]
    requests = [line for line in lines if "HTTP Request: POST" in line]
    assert len(attempts) >= 3
    assert len(requests) >= 3
    assert sorted({line.split(": tracemoe ")[0] for line in attempts}) == names  # every one, by name
    for line in requests:  # the log record's input after its time and level
        assert re.match(r"^[\d:.]+ INFO +(.+?): HTTP Request: POST ", line), line
        assert re.match(r"^[\d:.]+ INFO +(.+?): HTTP Request", line)[1] in names  # type: ignore[index]
    waited = [line for line in lines if "waiting" in line and "Search queue is full" in line]
    assert waited, done.stderr
    assert all(any(f" {name}: waiting" in line for name in names) for line in waited)

    alone = cli("search", names[0], "-p", "tracemoe", "--no-cache", "-v")
    assert re.search(r"^tracemoe ok in \d+\.\d\d s", alone.stderr, re.MULTILINE), alone.stderr
    assert names[0] + ":" not in alone.stderr


# ---------------------------------------------------------------------------------------------- answers


def test_a_confident_match_fits_twelve_lines_at_80_columns(tracemoe: Any, samples: Path) -> None:
    done = cli("search", str(samples / "tinted-good.jpg"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Kokoro Connect, episode 5, 19:29\u201319:34 (96.9 %, tracemoe)"
    assert len(lines) <= 12
    assert all(len(line) <= 80 for line in lines)
    assert "\u2026" not in done.stdout
    assert re.search(r"^ *96\.9 % +Kokoro Connect +5 +19:29\u201319:34 +tracemoe$", done.stdout, re.MULTILINE)
    assert "weaker hit(s) hidden (--all shows them)" in done.stderr


def test_the_notes_name_what_left_each_hit_out(tracemoe: Any, samples: Path) -> None:
    """Hits over the threshold cut by -n are the limit's; only those under it are "weaker"."""
    done = cli("search", str(samples / "tinted-good.jpg"), "--min-similarity", "0", "-n", "2")
    assert done.returncode == 0, done.stderr
    assert re.search(r"^\d+ more hit\(s\) not shown \(--limit N shows them\)$", done.stderr, re.MULTILINE)
    assert "weaker" not in done.stderr  # every hit reaches a threshold of 0
    default = cli("search", str(samples / "tinted-good.jpg"))  # the 90 % threshold: one hit reaches it
    assert "not shown" not in default.stderr
    assert re.search(r"^\d+ weaker hit\(s\) hidden \(--all shows them\)$", default.stderr, re.MULTILINE)


def test_a_bad_screenshot_is_an_honest_no(tracemoe: Any, samples: Path) -> None:
    done = cli("search", str(samples / "border-bad.jpg"))
    assert done.returncode == 1
    assert done.stdout.startswith("no confident match (best ")
    assert "a match needs 90 %" in done.stdout
    assert "hint: --all shows the weaker hits" in done.stderr
    shown = cli("search", str(samples / "border-bad.jpg"), "--all", "-n", "3")
    assert shown.returncode == 1
    rows = [line for line in shown.stdout.splitlines() if line.strip().endswith("tracemoe") and "%" in line]
    assert len(rows) == 3
    assert json.loads(cli("search", str(samples / "border-bad.jpg"), "--json").stdout)["hits"]


def test_min_similarity_moves_the_threshold(tracemoe: Any, samples: Path) -> None:
    strict = cli("search", str(samples / "tinted-good.jpg"), "--min-similarity", "0.99")
    assert strict.returncode == 1
    assert "a match needs 99 %" in strict.stdout
    assert cli("search", str(samples / "border-bad.jpg"), "--min-similarity", "0").returncode == 0


def test_fanout_says_which_provider_found_each_hit(
    emulated: Callable[[Any], Any], samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", emulated(tracemoe_app()).url)
    monkeypatch.setenv("ANISEARCH_WHATANIMEISTHIS_URL", emulated(whatanimeisthis_app()).url)
    done = cli(
        "search",
        str(samples / "tinted-good.jpg"),
        "--strategy",
        "fanout",
        "--all",
        "-n",
        "20",
        "--json",
        "--no-cache",
    )
    assert done.returncode == 0, done.stderr
    providers = {hit["provider"] for hit in json.loads(done.stdout)["hits"]}
    assert providers == {"tracemoe", "whatanimeisthis"}
    table = cli(
        "search", str(samples / "tinted-good.jpg"), "--strategy", "fanout", "--all", "-n", "20"
    ).stdout
    assert re.search(r"tracemoe *$", table, re.MULTILINE)
    assert re.search(r"whatanimeisthis *$", table, re.MULTILINE)


def test_match_in_the_library(
    live_server: Callable[[Any], Any], samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", live_server(tracemoe_app()).url)
    monkeypatch.setenv("ANISEARCH_PROVIDERS", "tracemoe")
    good = anisearch.search(samples / "tinted-good.jpg")
    bad = anisearch.search(samples / "border-bad.jpg")
    assert good.match is not None
    assert good.match == good.best
    assert good.match.anilist_id == 11887
    assert bad.best is not None
    assert bad.match is None
    assert bad.match_at(0.0) == bad.best
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        bad.match_at(1.5)


# ---------------------------------------------------------------------------------------------- layouts


def test_quota_and_providers_never_cut_a_value_at_80_columns(tracemoe: Any, samples: Path) -> None:
    assert cli("search", str(samples / "tinted-good.jpg")).returncode == 0
    quota = cli("quota", "--refresh")
    providers = cli("providers")
    for done in (quota, providers):
        assert done.returncode == 0, done.stderr
        assert "\u2026" not in done.stdout
        assert all(len(line) <= 80 for line in done.stdout.splitlines())
        assert not [line for line in done.stdout.splitlines() if line.endswith(" ")]  # grep, diff
    assert tracemoe.url in providers.stdout
    assert "99 of 100 left" in quota.stdout
    assert re.search(r"\d\d:\d\d \w+ \(in (\d+ h( \d+ min)?|1 d)\)", quota.stdout)  # rolling 24 h


def test_providers_says_credentials_are_set_not_that_they_signed_in() -> None:
    """A key set but never used (or wrong) was shown "signed in: yes"; what the command knows is that it is
    set."""
    done = cli("providers", env={"ANISEARCH_WHATANIMEISTHIS_KEY": "never-checked", "COLUMNS": "60"})
    assert done.returncode == 0, done.stderr
    assert "signed in" not in done.stdout
    assert re.search(r"^whatanimeisthis\n(  .*\n)*?  credentials +set$", done.stdout, re.MULTILINE)
    assert re.search(r"^tracemoe\n(  .*\n)*?  credentials +none$", done.stdout, re.MULTILINE)


def test_empty_lists_say_so(emulated: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANISEARCH_WHATANIMEISTHIS_URL", emulated(whatanimeisthis_app()).url)
    done = cli("recent")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.strip() == "no recent public searches"


def test_times_read_the_same_everywhere() -> None:
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    soon = _common.when(now + timedelta(hours=3, minutes=12), now)
    assert soon.endswith("(in 3 h 12 min)")
    assert re.match(r"^\d\d:\d\d \S+ \(", soon)
    assert _common.when(now - timedelta(minutes=5), now).endswith("(5 min ago)")
    assert re.match(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d \S+ \(in 2 d 3 h\)$", _common.when(now + timedelta(days=2, hours=3), now)
    )
    assert _common.when(None) == "-"
    frees = datetime(2026, 12, 1, 12, 3, 20, tzinfo=UTC)  # what a refusal says, the quota table says too
    said = QuotaExhaustedError("x", provider="tracemoe", resets_at=frees)
    assert "(frees at 2026-12-01T12:04Z)" in reason(said)
    local = (frees + timedelta(seconds=40)).astimezone().strftime("%H:%M")
    assert _common.when(frees, now).startswith(f"{local} ")
    # a moment to come never reads "now": 12:03:20, seen at 12:02:27, is within the minute
    almost = datetime(2026, 12, 1, 12, 2, 27, tzinfo=UTC)
    assert re.fullmatch(rf"{local} \S+ \(in 1 min\)", _common.when(frees, almost))
    assert _common.when(frees, frees - timedelta(seconds=90)).endswith("(in 2 min)")
    assert _common.when(frees, frees + timedelta(seconds=30)).endswith("(now)")
    assert [_common.clock(s) for s in (1169.17, 59.9, 3725.0, None)] == ["19:29", "00:59", "1:02:05", "-"]


def test_titles_prefer_names_over_release_files() -> None:
    hit = anisearch.Hit(
        provider="tracemoe", similarity=0.9, filename="[Ohys-Raws] Fune o Amu - 05 (CX 1280x720 x264 AAC).mp4"
    )
    assert _render.title_of(hit) == "Fune o Amu - 05"
    named = hit.model_copy(
        update={"title": anisearch.Title(romaji="Fune wo Amu", english="The Great Passage")}
    )
    assert _render.title_of(named) == "Fune wo Amu"
    assert _render.title_of(anisearch.Hit(provider="x", similarity=0.5, anilist_id=21)) == "AniList 21"


# ---------------------------------------------------------------------------------------------- batch


def test_a_folder_gives_one_json_line_per_image_with_its_path(
    tracemoe: Any, samples: Path, tmp_path: Path
) -> None:
    paths = frames(tmp_path / "shots" / "nested", samples, 6)
    (tmp_path / "shots" / "notes.txt").write_text("not an image")
    done = cli("search", str(tmp_path / "shots"), "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(line["input"] for line in lines) == sorted(map(str, paths))
    assert all(line["hits"][0]["anilist_id"] == 11887 for line in lines)
    assert done.stderr.strip().startswith("6 input(s) in ")
    assert "6 matched, 0 no confident match, 0 failed (0 from the cache)" in done.stderr
    again = cli("search", str(tmp_path / "shots"), "--json")
    assert "(6 from the cache)" in again.stderr
    assert tracemoe.app.state.emulator.search_requests == 6


def test_a_folder_picks_up_every_kind_of_file_anisearch_reads(
    tracemoe: Any, samples: Path, tmp_path: Path
) -> None:
    """A phone's .3gp, a recorder's .m2ts, an animated .apng, a .jpg_large saved from a social site: each
    searched alone, and each picked up in a folder, where they were left out without a word."""
    shots = tmp_path / "shots"
    shots.mkdir()
    picture = (samples / "tinted-good.jpg").read_bytes()  # the content is what counts; the name picks it
    names = ["clip.3gp", "capture.m2ts", "loop.apng", "saved.jpg_large", "old.mpg"]
    for name in names:
        (shots / name).write_bytes(picture)
    done = cli("search", str(shots), "--json")
    assert done.returncode == 0, done.stderr
    assert sorted(Path(json.loads(line)["input"]).name for line in done.stdout.splitlines()) == sorted(names)


def test_a_folder_picks_up_a_ts_file_only_when_it_is_a_transport_stream(
    tracemoe: Any, samples: Path, tmp_path: Path
) -> None:
    """``.ts`` names TypeScript sources too: a folder of code beside a screenshot is searched as the
    screenshot alone (exit 0), where each source was a failed input (exit 3)."""
    from anisearch._cli._search import _walk

    shots = tmp_path / "shots"
    shots.mkdir()
    (shots / "shot.jpg").write_bytes((samples / "tinted-good.jpg").read_bytes())
    (shots / "index.ts").write_text("export const x: number = 1;\n")
    (shots / "recording.ts").write_bytes((b"\x47" + bytes(187)) * 8)  # 188-byte packets
    assert [path.name for path in _walk(shots, None)] == ["recording.ts", "shot.jpg"]
    (shots / "recording.ts").unlink()  # not a video that decodes: only its first bytes are one
    done = cli("search", str(shots), "--json")
    assert done.returncode == 0, done.stderr
    assert [Path(json.loads(line)["input"]).name for line in done.stdout.splitlines()] == ["shot.jpg"]


def test_many_inputs_mix_files_globs_and_failures(tracemoe: Any, samples: Path, tmp_path: Path) -> None:
    frames(tmp_path / "shots", samples, 4)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a picture")
    done = cli(
        "search",
        str(tmp_path / "shots"),
        str(samples / "border-bad.jpg"),
        str(bad),
        str(tmp_path / "gone.png"),
        "--glob",
        "*.png",
    )
    assert done.returncode == 3
    out = done.stdout.splitlines()
    assert len([line for line in out if "Kokoro Connect, episode 5" in line]) == 2  # the two PNGs
    assert any(line.startswith(f"{samples / 'border-bad.jpg'}: no confident match") for line in out)
    assert any(line.startswith(f"{bad}: error:") for line in out)
    assert f"anisearch: error: no such file: {tmp_path / 'gone.png'}" in done.stderr
    assert "5 input(s) in" in done.stderr
    assert "2 matched, 1 no confident match, 2 failed" in done.stderr


def test_a_file_name_that_is_not_utf8_is_written_so_every_line_stays_valid(
    tracemoe: Any, samples: Path, tmp_path: Path
) -> None:
    import os

    shots = tmp_path / "shots"
    frames(shots, samples, 2)
    odd = shots / os.fsdecode(b"caf\xe9.jpg")  # Latin-1 bytes: not UTF-8
    shutil.copy(samples / "tinted-good.jpg", odd)
    done = cli("search", str(shots), "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.encode("utf-8").splitlines()]  # strict UTF-8
    assert len(lines) == 3
    assert all(line["hits"][0]["anilist_id"] == 11887 for line in lines)
    assert os.fsencode(str(odd)) in {os.fsencode(line["input"]) for line in lines}  # the bytes come back
    text = cli("search", str(shots))
    assert text.returncode == 0, text.stderr
    assert f"{shots}/caf\\xe9.jpg: Kokoro Connect, episode 5" in text.stdout
    assert "3 matched" in text.stderr


def test_json_lines_say_why_each_provider_failed(
    emulated: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch, samples: Path, tmp_path: Path
) -> None:
    server = emulated(tracemoe_app(quota=1))
    monkeypatch.setenv("ANISEARCH_PROVIDERS", "tracemoe")
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", server.url)
    shots = frames(tmp_path / "shots", samples, 2)
    spent = cli("search", *map(str, shots), "--json", "--no-cache")
    lines = {line["input"]: line for line in map(json.loads, spent.stdout.splitlines())}
    (failed,) = [line["error"] for line in lines.values() if "error" in line]
    (why,) = failed["providers"]
    assert (why["provider"], why["type"]) == ("tracemoe", "QuotaExhaustedError")
    assert datetime.fromisoformat(why["resets_at"]) > datetime.now(UTC) + timedelta(hours=23)
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", "http://127.0.0.1:9")  # nothing listens there
    down = cli("search", *map(str, shots), "--json", "--no-cache")
    for line in map(json.loads, down.stdout.splitlines()):
        (why,) = line["error"]["providers"]
        assert (why["type"], why["resets_at"]) == ("ProviderConnectionError", None)


def test_one_input_that_failed_gives_its_error_as_json_on_stdout(
    monkeypatch: pytest.MonkeyPatch, samples: Path, tmp_path: Path
) -> None:
    """``anisearch search shot.jpg --json | jq`` reads why it failed, as a many-input run gives it."""
    monkeypatch.setenv("ANISEARCH_PROVIDERS", "tracemoe")
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", "http://127.0.0.1:9")  # nothing listens there
    shot = str(samples / "tinted-good.jpg")
    down = cli("search", shot, "--json", "--no-cache")
    assert down.returncode == 4
    (line,) = map(json.loads, down.stdout.splitlines())
    assert line["input"] == shot
    assert (line["error"]["type"], line["error"]["exit_code"]) == ("AllProvidersFailedError", 4)
    (why,) = line["error"]["providers"]
    assert why["type"] == "ProviderConnectionError"
    assert "anisearch: error:" in down.stderr  # and the error as always on stderr
    (tmp_path / "notes.txt").write_text("not a picture")
    bad = cli("search", str(tmp_path / "notes.txt"), "--json", "--no-cache")
    assert bad.returncode == 3
    assert json.loads(bad.stdout)["error"]["type"] == "InvalidImageError"
    gone = cli("search", str(tmp_path / "gone.jpg"), "--json")
    assert gone.returncode == 3
    assert json.loads(gone.stdout) == {
        "input": str(tmp_path / "gone.jpg"),
        "error": {
            "type": "InvalidImageError",
            "message": f"{tmp_path / 'gone.jpg'}: no such file",
            "exit_code": 3,
        },
    }


def test_glob_takes_the_files_at_the_top_too_and_ignores_case(
    tracemoe: Any, samples: Path, tmp_path: Path
) -> None:
    """``--glob '**/*.jpg'`` skipped the files at the folder's top (a flat folder was "no file matches"),
    and ``--glob '*.jpg'`` left out ``EP1.JPG``, which a folder search without ``--glob`` takes."""
    lib = tmp_path / "lib"
    (lib / "season1").mkdir(parents=True)
    shutil.copy(samples / "tinted-good.jpg", lib / "top.jpg")
    shutil.copy(samples / "tinted-good.jpg", lib / "season1" / "EP1.JPG")
    (lib / "season1" / "notes.txt").write_text("not a picture")

    def searched(folder: Path, pattern: str) -> list[str]:
        done = cli("search", str(folder), "--glob", pattern, "--json")
        assert done.returncode == 0, done.stderr
        found = (Path(json.loads(line)["input"]) for line in done.stdout.splitlines())
        return sorted(path.relative_to(lib).as_posix() for path in found)

    both = ["season1/EP1.JPG", "top.jpg"]
    assert searched(lib, "**/*.jpg") == both
    assert searched(lib, "*.jpg") == both
    assert searched(lib / "season1", "**/*.jpg") == ["season1/EP1.JPG"]
    assert searched(lib, "season1/**/*.jpg") == ["season1/EP1.JPG"]
    assert searched(lib, "**/season1/**/*.jpg") == ["season1/EP1.JPG"]


def test_a_folder_with_nothing_to_search_names_the_folder_and_the_pattern(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = cli("search", str(empty))
    assert done.returncode == 3
    assert f"no images to search in {empty}" in done.stderr
    (empty / "shot.jpg").write_bytes(b"")
    pattern = cli("search", str(empty), "--glob", "*.png")
    assert pattern.returncode == 3
    assert f"no file in {empty} matches --glob '*.png'" in pattern.stderr
    assert "hint: check the pattern" in pattern.stderr


def test_links_that_lead_nowhere_are_named_not_skipped_in_silence(
    tracemoe: Any, samples: Path, tmp_path: Path
) -> None:
    shots = tmp_path / "shots"
    (good,) = frames(shots, samples, 1)
    (shots / "gone.jpg").symlink_to(shots / "deleted.jpg")
    (shots / "loop1.jpg").symlink_to(shots / "loop2.jpg")
    (shots / "loop2.jpg").symlink_to(shots / "loop1.jpg")
    done = cli("search", str(shots))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{good}: Kokoro Connect")
    assert f"warning: skipped the link {shots / 'gone.jpg'}: no such file" in done.stderr
    assert (
        f"warning: skipped the link {shots / 'loop1.jpg'}: too many levels of symbolic links" in done.stderr
    )
    named = cli("search", str(shots / "loop1.jpg"))
    assert named.returncode == 3
    assert named.stderr.startswith(
        f"anisearch: error: too many levels of symbolic links: {shots / 'loop1.jpg'}"
    )


def test_a_folder_behind_a_link_and_a_name_too_long_are_said_never_a_traceback(
    tracemoe: Any, samples: Path, tmp_path: Path
) -> None:
    shots, elsewhere = tmp_path / "shots", tmp_path / "disk2" / "season1"
    (good,) = frames(shots, samples, 1)
    frames(elsewhere, samples, 1)
    (shots / "season1").symlink_to(elsewhere, target_is_directory=True)
    done = cli("search", str(shots))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{good}: Kokoro Connect")
    assert (
        f"warning: skipped the linked folder {shots / 'season1'}: folders behind links are not followed; "
        "name it to search it"
    ) in done.stderr
    too_long = "x" * 300 + ".jpg"  # Path.is_dir() raises for it (ENAMETOOLONG) where it returns False for a
    mixed = cli("search", str(good), too_long)  # missing file
    assert mixed.returncode == 3, mixed.stderr
    assert "file name too long" in mixed.stderr
    assert "Traceback" not in mixed.stderr
    assert f"{good}: Kokoro Connect" in mixed.stdout
    assert f"{too_long}: error: file name too long" in mixed.stdout  # every input has its line


def test_json_lines_account_for_every_input(tracemoe: Any, samples: Path, tmp_path: Path) -> None:
    gone = str(tmp_path / "gone.png")
    done = cli("search", str(samples / "tinted-good.jpg"), gone, "--json")
    assert done.returncode == 3
    lines = {line["input"]: line for line in map(json.loads, done.stdout.splitlines())}
    assert set(lines) == {str(samples / "tinted-good.jpg"), gone}
    assert lines[gone]["error"] == {
        "type": "InvalidImageError",
        "message": f"{gone}: no such file",
        "exit_code": 3,
    }


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["search", "x.jpg", "--raw"], "--raw adds the upstream items to --json output"),
        (["search", "-", "-"], "- (standard input) can be searched once"),
    ],
)
def test_arguments_that_cannot_work_are_usage_errors(args: list[str], says: str) -> None:
    done = cli(*args, stdin=b"\xff\xd8")
    assert done.returncode == 2
    assert done.stderr.startswith(f"anisearch: error: {says}")


def test_stdin_from_a_terminal_is_refused_instead_of_waited_for() -> None:
    done = run_on_a_terminal("search", "-")
    assert done.returncode == 2
    assert "- reads the image from standard input, which is this terminal" in done.stderr


def test_ctrl_c_finishes_with_a_summary(
    tracemoe: Any, samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames(tmp_path / "shots", samples, 3)
    real = _search._search_all

    async def interrupted(inputs: list[_search.Input], *args: Any, **kwargs: Any) -> Any:
        await real(inputs[:1], *args, **kwargs)  # as if Ctrl-C came after the first answer
        raise KeyboardInterrupt

    monkeypatch.setattr(_search, "_search_all", interrupted)
    done = cli("search", str(tmp_path / "shots"))
    assert done.returncode == 130
    assert "interrupted after 1 of 3 in" in done.stderr
    assert "Traceback" not in done.stderr


def _results_alive() -> int:
    gc.collect()
    return sum(1 for thing in gc.get_objects() if isinstance(thing, anisearch.SearchResult))


def test_a_batch_lets_each_result_go_once_its_line_is_printed(
    tracemoe: Any, samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder search held every input's result (about 40 KB each) until its summary, only to count them:
    10 000 files took half a gigabyte. By the summary no result of the batch is left, only its counts."""
    frames(tmp_path / "shots", samples, 6)
    before = _results_alive()
    real = _search._summary
    alive: list[int] = []

    def summary(*args: Any, **kwargs: Any) -> None:
        alive.append(_results_alive())
        real(*args, **kwargs)

    monkeypatch.setattr(_search, "_summary", summary)
    done = cli("search", str(tmp_path / "shots"), "--json", "--no-cache")
    assert done.returncode in {0, 1}, done.stderr
    assert len(done.stdout.splitlines()) == 6
    assert "6 input(s) in" in done.stderr
    assert len(alive) == 1
    assert alive[0] <= before


def test_twenty_images_in_one_process_and_one_client(tracemoe: Any, samples: Path, tmp_path: Path) -> None:
    frames(tmp_path / "shots", samples, 20)
    done = cli("search", str(tmp_path / "shots"), "--json", "--no-cache")
    assert done.returncode in {0, 1}, done.stderr
    assert len(done.stdout.splitlines()) == 20
    assert tracemoe.app.state.emulator.search_requests == 20
    assert "20 input(s)" in done.stderr


# ---------------------------------------------------------------------------------------------- emulate


def test_emulate_help_lists_every_knob_with_its_default() -> None:
    text = cli("emulate", "-h").stdout
    flat = " ".join(text.split())
    assert 'tracemoe: era="v3", quota=null, quota_window=86400.0, concurrency=1' in flat
    assert flat.count("tracemoe: era=") == 1  # once, however many distributions register it
    assert "whatanime-ga: max_body_bytes=1048576" in flat
    assert "whatanimeisthis:" in flat


def test_emulate_refuses_a_busy_port_in_one_line_and_suggests_a_free_one() -> None:
    with socket.socket() as sock, socket.socket() as next_one:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        try:
            next_one.bind(("127.0.0.1", port + 100))  # the first port the hint would try is taken too
            next_one.listen()
        except OSError:
            pass
        done = cli("emulate", "tracemoe", "--port", str(port))
        error, hint = done.stderr.strip().splitlines()
        said = re.fullmatch(r"hint: choose another with --port \(--port (\d+) is free now\)", hint)
        assert said is not None, hint
        suggested = int(said[1])
        assert suggested != port + 100
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", suggested))  # free indeed
    assert done.returncode == 2
    assert error == f"anisearch: error: port {port} on 127.0.0.1 is in use"


def test_emulate_refuses_an_unknown_knob_and_names_the_known_ones() -> None:
    done = cli("emulate", "tracemoe", "-o", "colour=blue")
    assert done.returncode == 2
    assert "the tracemoe emulator has no knob colour" in done.stderr
    assert "hint: its knobs: concurrency, era, " in done.stderr


@pytest.mark.parametrize(
    ("knob", "says"),
    [
        ("quota=lots", 'knob quota takes a whole number or null, not "lots"'),
        ("latency=soon", 'knob latency takes a number, not "soon"'),
        ("concurrency=1.5", "knob concurrency takes a whole number, not 1.5"),
        ("trust_forwarded_for=1", "knob trust_forwarded_for takes true or false, not 1"),
    ],
)
def test_emulate_refuses_a_knob_of_the_wrong_kind_before_serving(knob: str, says: str) -> None:
    port = str(_common_free_port())
    done = cli("emulate", "tracemoe", "--port", port, "-o", knob)  # it would answer every search with a 500
    assert done.returncode == 2
    assert says in done.stderr
    assert "serving" not in done.stderr


def test_emulate_without_the_extra_names_the_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def without_uvicorn(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvicorn":
            raise ModuleNotFoundError("No module named 'uvicorn'", name="uvicorn")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_uvicorn)
    done = cli("emulate", "tracemoe")
    assert done.returncode == 2
    assert "uvicorn is missing" in done.stderr
    assert "hint: pip install 'anisearch-gateway[emulator]'" in done.stderr


def test_emulate_serves_and_prints_the_url_to_export() -> None:
    """A real process: the URL line comes first, the emulator answers, Ctrl-C stops it."""
    port = _common_free_port()
    anisearch_bin = shutil.which("anisearch")
    command = [anisearch_bin] if anisearch_bin else ["python", "-m", "anisearch"]
    with subprocess.Popen(
        [*command, "emulate", "tracemoe", "--port", str(port), "--quota", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            line = process.stdout.readline() if process.stdout else ""
            assert line.strip() == (
                f"tracemoe: http://127.0.0.1:{port}   export ANISEARCH_TRACEMOE_URL=http://127.0.0.1:{port}"
            )
        finally:
            process.terminate()
            process.wait(timeout=10)


def test_knobs_of_a_keyword_factory_are_unlisted_not_refused() -> None:
    def factory(**knobs: Any) -> Any:
        return knobs

    assert _emulate.knobs_of(factory) is None


def test_a_keyword_factory_takes_its_knobs_and_refuses_others_in_one_line() -> None:
    app = _emulate._build("whatanimeisthis", {"guest_daily_limit": 2}, strict=True)
    assert app.state.emulator.knobs.guest_daily_limit == 2
    assert (
        _emulate._build("whatanimeisthis", {"quota": 3}, strict=False).state.emulator.knobs.guest_daily_limit
        == 5
    )
    done = cli("emulate", "whatanimeisthis", "-o", "colour=1")
    assert done.returncode == 2
    assert done.stderr.startswith("anisearch: error: the whatanimeisthis emulator has no knob colour")
    assert "guest_daily_limit" in done.stderr


def test_a_deadline_bounds_each_search(
    emulated: Callable[[Any], Any], samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", emulated(tracemoe_app(latency=5.0)).url)
    done = cli("search", str(samples / "tinted-good.jpg"), "-p", "tracemoe", "--deadline", "0.5")
    assert done.returncode == 4
    assert done.stderr.startswith("anisearch: error: every provider failed: tracemoe failed")
    assert cli("search", "x.jpg", "--deadline", "0").returncode == 2


def test_a_wait_for_a_slot_is_shown_in_the_spinner(
    emulated: Callable[[Any], Any], samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each search holds trace.moe's one slot for a second: the other input's search waits for it.
    slow = emulated(tracemoe_app(latency=1.0))
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", slow.url)
    monkeypatch.setenv("ANISEARCH_PROVIDERS", "tracemoe")
    lines: list[str] = []
    real = _search._search_all

    async def spy(*args: Any, **kwargs: Any) -> Any:
        kwargs["on_wait"] = lines.append
        return await real(*args, **kwargs)

    monkeypatch.setattr(_search, "_search_all", spy)
    done = cli("search", str(samples / "tinted-good.jpg"), str(samples / "border-bad.jpg"), "--jobs", "2")
    assert done.returncode == 1, done.stderr  # border-bad is no match
    assert any(line.startswith("waiting for a tracemoe slot") for line in lines), lines


def test_an_upper_case_url_is_a_url_and_a_private_one_is_refused() -> None:
    done = cli("search", "HTTP://10.0.0.1/a.jpg")
    assert done.returncode == 3
    assert "no such file" not in done.stderr
    assert done.stderr.startswith("anisearch: error:")


@pytest.mark.filterwarnings("always")  # the point is what the CLI does with a warning, not pytest
def test_library_warnings_reach_stderr_only_with_verbose(
    tracemoe: Any, samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import warnings

    from anisearch import _image

    real = _image.prepare_boxes

    def warning_prepare(*args: Any, **kwargs: Any) -> Any:
        warnings.warn("a library has something to say", UserWarning, stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(_image, "prepare_boxes", warning_prepare)
    image = str(samples / "tinted-good.jpg")
    # pytest swaps warnings.showwarning for each test: let the CLI install its capture in this one.
    logging.captureWarnings(False)  # noqa: FBT003 - the stdlib API
    try:
        quiet = cli("search", image, "--no-cache")
        loud = cli("search", image, "--no-cache", "-v")
    finally:
        logging.captureWarnings(False)  # noqa: FBT003 - the stdlib API
    assert quiet.returncode == loud.returncode == 0
    assert "something to say" not in quiet.stderr
    assert "something to say" in loud.stderr


def test_a_refused_sign_in_points_at_anisearch_login() -> None:
    refused = anisearch.AuthenticationError("Invalid API key", provider="whatanimeisthis")
    assert _common.hint_for(refused) == (
        "check the credentials for whatanimeisthis: its API key or token, or 'anisearch login'"
    )


def test_hints_name_the_wait_and_leave_a_named_remedy_alone() -> None:
    limited = anisearch.RateLimitedError("Too many requests", provider="whatanimeisthis", retry_after=9.2)
    assert _common.hint_for(limited) == "try again in 10 s (whatanimeisthis said so)"
    origin = anisearch.AuthenticationError(
        "the site refused the Origin header 'https://evil.example' (INVALID_ORIGIN): set the whatanimeisthis "
        "'origin' setting (ANISEARCH_WHATANIMEISTHIS_ORIGIN) to an origin the site trusts",
        provider="whatanimeisthis",
    )
    assert _common.hint_for(origin) is None  # not "check the credentials": the message says what to set


def test_a_slot_another_search_holds_says_so_in_the_hint(
    emulated: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = emulated(tracemoe_app(concurrency=0))  # every search finds the caller's one slot taken
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", server.url)
    monkeypatch.setattr("anisearch._ledger._logic.busy_backoff_seconds", lambda streak, jitter: 0.01)
    done = cli("search", str(Path("examples/tinted-good.jpg").resolve()), "-p", "tracemoe", "--no-cache")
    assert done.returncode == 4
    error, hint = done.stderr.strip().splitlines()
    assert "Concurrency limit exceeded" in error
    assert hint.startswith("hint: another search holds tracemoe's slot")


def test_a_weak_first_answer_asks_the_next_provider_at_the_default_threshold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    apps = {"trace.test": tracemoe_app(), "wait.test": whatanimeisthis_app()}
    monkeypatch.setattr(_common, "_transport_factory", lambda: WeakerWhatAnimeIsThis(apps))
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", "http://trace.test")
    monkeypatch.setenv("ANISEARCH_WHATANIMEISTHIS_URL", "http://wait.test")
    shot = str(Path("examples/tinted-good.jpg").resolve())
    done = cli("search", shot, "-p", "whatanimeisthis", "-p", "tracemoe", "--no-cache", "--json")
    assert done.returncode == 0
    answer = json.loads(done.stdout)
    # whatanimeisthis's best is under the 0.9 the help names as the default: tracemoe is asked too
    assert [(a["provider"], a["outcome"]) for a in answer["attempts"]] == [
        ("whatanimeisthis", "ok"),
        ("tracemoe", "ok"),
    ]
    assert answer["provider"] == "tracemoe"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (anisearch.AllProvidersFailedError("no provider answered", [anisearch.ProviderError("x")]), 4),
        (anisearch.LedgerError("the ledger is broken"), 6),
    ],
    ids=["a group of provider errors", "a ledger error"],
)
def test_an_error_a_command_lets_through_is_one_line_with_its_exit_code(
    error: anisearch.AnisearchError, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    import typer

    from anisearch._cli import _Group

    app = typer.Typer(cls=_Group)

    @app.command()
    def boom() -> None:
        raise error

    @app.command()
    def other() -> None: ...

    with pytest.raises(SystemExit) as exited:
        app(["boom"], prog_name="anisearch")
    assert exited.value.code == code
    assert capsys.readouterr().err.splitlines()[0].startswith("anisearch: error: ")


def test_a_cache_that_cannot_be_used_is_said_once_without_verbose(
    tracemoe: Any, samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every repeated search then costs quota: the user is told, not only with -v."""
    notes = tmp_path / "notes.db"
    notes.write_text("not a cache\n")
    monkeypatch.setenv("ANISEARCH_CACHE", str(notes))
    image = str(samples / "tinted-good.jpg")
    done = cli("search", image, image)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1
    assert f"the result cache {notes} is unusable" in warnings[0]
    assert tracemoe.app.state.emulator.search_requests == 2


def test_cache_commands_leave_a_file_that_is_not_a_cache_alone(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"  # ANISEARCH_CACHE pointed at somebody's file by mistake
    notes.write_text("my precious notes\n")
    for command in ("info", "clear"):
        done = cli("cache", command, env={"ANISEARCH_CACHE": str(notes)})
        assert done.returncode == 2
        error, hint = done.stderr.strip().splitlines()
        assert error.startswith(f"anisearch: error: the result cache {notes} cannot be used (")
        assert hint == "hint: point ANISEARCH_CACHE at a file of its own, or set it to off"
    assert notes.read_text() == "my precious notes\n"


def test_the_command_tells_retries_through_logging_even_with_structlog_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """stamina would log through structlog when it is installed, and structlog prints on stdout: into
    ``--json`` output. The command makes stamina use logging, which it sends to stderr."""
    import stamina.instrumentation

    from anisearch import _retry

    monkeypatch.setattr(_retry, "_STANDARD_LOGGING_ONLY", False)
    chosen: list[object] = []
    monkeypatch.setattr(stamina.instrumentation, "set_on_retry_hooks", chosen.append)
    _retry.stamina()
    assert chosen == []  # a library leaves the program's stamina set-up alone
    cli("search", "-h")  # any command sets up its logging
    _retry.stamina()
    assert chosen == [[stamina.instrumentation.LoggingOnRetryHook]]


def test_results_on_the_terminal_of_the_progress_bar_are_printed_above_it(
    live_server: Callable[[Any], Any], samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stdout and stderr on one terminal (the everyday `anisearch search shots/`): each result line
    starts a line of its own, never glued after the bar's text."""
    import os
    import pty
    import sys

    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", live_server(tracemoe_app(latency=0.2)).url)
    monkeypatch.setenv("ANISEARCH_PROVIDERS", "tracemoe")
    frames(tmp_path / "shots", samples, 4)
    controller, terminal = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-m", "anisearch", "search", str(tmp_path / "shots"), "--no-cache", "-j", "1"],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
    )
    os.close(terminal)
    screen = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(controller)
    assert child.wait(60) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode("utf-8", "replace"))
    results = [line for line in re.split(r"[\r\n]", text) if "frame0" in line]
    assert len(results) == 4, text
    assert all(line.startswith(str(tmp_path / "shots")) for line in results), results


def test_shell_completion_is_offered_and_completes_commands() -> None:
    import os
    import sys

    shown = cli("--show-completion", "bash")
    assert shown.returncode == 0, shown.stderr
    assert "_anisearch_completion" in shown.stdout
    environment = os.environ | {
        "COMP_WORDS": "anisearch qu",
        "COMP_CWORD": "1",
        "_ANISEARCH_COMPLETE": "complete_bash",
    }
    done = subprocess.run(
        [sys.executable, "-m", "anisearch"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.split() == ["quota"]
    typing = {
        "COMP_WORDS": "anisearch search -p what",
        "COMP_CWORD": "3",
        "_ANISEARCH_COMPLETE": "complete_bash",
    }
    names = subprocess.run(
        [sys.executable, "-m", "anisearch"],
        env=os.environ | typing,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert names.stdout.split() == ["whatanime-ga", "whatanimeisthis"]  # the providers' names too


def test_a_url_of_another_scheme_given_as_a_path_says_what_to_give() -> None:
    done = cli("search", "file:///srv/shots/my%20shot.png")
    assert done.returncode == 3
    assert "hint: a file: URL: give its path, /srv/shots/my shot.png" in done.stderr
