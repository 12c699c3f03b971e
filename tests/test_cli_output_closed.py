"""A reader that closes the command's output early (``| head -1``) ends the command quietly."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from anisearch_emulators.tracemoe import create_app

pytestmark = pytest.mark.e2e

DEMO = Path(__file__).resolve().parents[1] / "examples" / "tinted-good.jpg"


def twelve_shots(tmp_path: Path) -> Path:
    """A folder of twelve copies of the demo frame."""
    shots = tmp_path / "shots"
    shots.mkdir()
    for n in range(12):
        shutil.copy(DEMO, shots / f"shot-{n:02}.jpg")
    return shots


def searching_at(url: str) -> dict[str, str]:
    """The environment of a command that searches the trace.moe emulator at ``url`` only."""
    return os.environ | {
        "ANISEARCH_TRACEMOE_URL": url,
        "ANISEARCH_PROVIDERS": "tracemoe",
        "ANISEARCH_METADATA": "off",
        "ANISEARCH_LEDGER": "memory://",
    }


@pytest.mark.parametrize("flags", [["--json"], []], ids=["json lines", "one line per input"])
def test_a_batch_whose_reader_stops_after_one_line_exits_141_without_a_traceback(
    tmp_path: Path, live_server: Callable[[Any], Any], flags: list[str]
) -> None:
    server = live_server(create_app(quota=10**6, rate_limit=10**6))
    shots, env = twelve_shots(tmp_path), searching_at(server.url)
    command = [sys.executable, "-m", "anisearch", "search", str(shots), "--no-cache", *flags]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        first = process.stdout.readline()
        process.stdout.close()  # what `| head -1` does after its line
        errors = process.stderr.read()
        code = process.wait(timeout=60)
    assert "shot-" in first
    assert code == 141  # 128 + SIGPIPE, as a shell reports it; never 1, which means "no confident match"
    assert "Traceback" not in errors
    assert "Exception" not in errors


@pytest.mark.parametrize(
    ("stop", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["Ctrl-C", "SIGTERM"]
)
def test_a_signal_while_the_reader_lags_stops_the_batch_between_whole_lines(
    tmp_path: Path, live_server: Callable[[Any], Any], stop: signal.Signals, code: int
) -> None:
    import fcntl
    import json
    import time

    server = live_server(create_app(quota=10**6, rate_limit=10**6, latency=0.05))
    shots, env = twelve_shots(tmp_path), searching_at(server.url)
    reading, writing = os.pipe()
    fcntl.fcntl(writing, 1031, 4096)  # F_SETPIPE_SZ: a one-page pipe, which one --raw line overfills
    command = [sys.executable, "-m", "anisearch", "search", str(shots), "--no-cache", "--json", "--raw"]
    with subprocess.Popen(command, env=env, stdout=writing, stderr=subprocess.PIPE) as process:
        os.close(writing)
        ready, _, _ = select.select([reading], [], [], 60)  # the first line is on its way into the pipe
        assert ready, "the command wrote nothing"
        time.sleep(0.5)  # the command waits in its write: nobody reads yet
        process.send_signal(stop)
        with os.fdopen(reading, "rb") as output:
            written = output.read()
        assert process.stderr is not None
        errors = process.stderr.read().decode()
        returned = process.wait(timeout=60)
    lines = written.splitlines()
    assert lines
    assert written.endswith(b"\n")
    assert all(json.loads(line)["input"].startswith(str(shots)) for line in lines)  # every line whole
    assert returned == code
    assert f"interrupted after {len(lines)} of 12" in errors
    assert "Traceback" not in errors


@pytest.mark.parametrize(
    ("first", "second", "code"),
    [(signal.SIGINT, signal.SIGINT, 130), (signal.SIGTERM, signal.SIGINT, 143)],
    ids=["Ctrl-C twice", "SIGTERM then Ctrl-C"],
)
def test_a_second_signal_stops_a_batch_whose_reader_never_reads(
    tmp_path: Path,
    live_server: Callable[[Any], Any],
    first: signal.Signals,
    second: signal.Signals,
    code: int,
) -> None:
    """The first signal waits for the line in the pipe; a reader that never reads again must not keep the
    command alive: the second ends it, with its summary and the exit code of the first, and no traceback;
    stderr says the last line of the JSON Lines is cut short."""
    import fcntl
    import time

    server = live_server(create_app(quota=10**6, rate_limit=10**6, latency=0.05))
    shots, env = twelve_shots(tmp_path), searching_at(server.url)
    reading, writing = os.pipe()
    fcntl.fcntl(writing, 1031, 4096)  # F_SETPIPE_SZ: one page
    command = [sys.executable, "-m", "anisearch", "search", str(shots), "--no-cache", "--json", "--raw"]
    with subprocess.Popen(command, env=env, stdout=writing, stderr=subprocess.PIPE) as process:
        os.close(writing)
        ready, _, _ = select.select([reading], [], [], 60)
        assert ready, "the command wrote nothing"
        time.sleep(0.5)  # the command waits in its write
        process.send_signal(first)
        time.sleep(0.5)
        assert process.poll() is None  # the first waits for the line to be read
        process.send_signal(second)
        assert process.stderr is not None
        try:
            errors = process.stderr.read().decode()  # to its end: the command ended without a reader
            returned = process.wait(timeout=30)
        finally:
            os.close(reading)
    assert returned == code
    assert "interrupted after" in errors
    assert "the last line of output is cut short" in errors
    assert "Traceback" not in errors


def test_an_ignored_ctrl_c_stays_ignored_while_a_line_waits() -> None:
    """A command started with Ctrl-C ignored (``cmd &`` in a script) keeps ignoring it, even twice."""
    import time

    reading, writing = os.pipe()
    line = "from anisearch._cli._common import print_line\nprint_line('x' * 1_000_000)"
    with subprocess.Popen(
        [sys.executable, "-c", line],
        stdout=writing,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # noqa: PLW1509 - no threads here
    ) as process:
        os.close(writing)
        ready, _, _ = select.select([reading], [], [], 60)
        assert ready, "nothing was written"
        for _ in range(2):
            process.send_signal(signal.SIGINT)
            time.sleep(0.3)
        alive = process.poll() is None
        os.close(reading)  # the reader goes: the write fails and the command ends
        process.wait(timeout=30)
    assert alive


def test_a_search_stopped_by_sigterm_keeps_its_slot_while_the_upstream_runs_it(
    tmp_path: Path, live_server: Callable[[Any], Any]
) -> None:
    """trace.moe runs a search to its end whatever its caller does, and refuses the caller's next search
    meanwhile ("Concurrency limit exceeded", a 402). A command stopped mid-search (SIGTERM, Ctrl-C) leaves
    its slot held for that time in the shared ledger: the next command waits for it and meets no 402,
    although the process that held the slot has ended."""
    import shutil
    import time

    # Each search takes 6 s upstream, one at a time: the first command learns that from its first input,
    # and holds the slot of its second, stopped, for about that long: time for the next command to start,
    # which a loaded machine (the whole suite on every core) has taken up to 4 s to do.
    app = create_app(quota=10**6, rate_limit=10**6, latency=6.0)
    server = live_server(app)
    env = searching_at(server.url) | {
        "ANISEARCH_LEDGER": f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
        "ANISEARCH_STATE_DIR": str(tmp_path / "state"),
        "ANISEARCH_CACHE_DIR": str(tmp_path / "cache"),
    }
    shots = tmp_path / "shots"
    shots.mkdir()
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(DEMO, shots / name)
    command = [sys.executable, "-m", "anisearch", "search", "--no-cache"]
    emulator = app.state.emulator
    with subprocess.Popen(
        [*command, str(shots), "-j", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as first:
        deadline = time.monotonic() + 60
        while emulator.search_requests < 2:  # its second search has reached the emulator
            assert time.monotonic() < deadline, "the first command's second search never reached the emulator"
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            time.sleep(0.01)
        # ... and is read and running there. Not "a search logged and one running": the first search is
        # counted down a moment after its log row, so that also held before the second was sent.
        time.sleep(0.5)
        assert len(emulator.log) == 1
        assert any(emulator.concurrent.values())
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 143
    second = subprocess.run(
        [*command, str(DEMO), "-v"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert second.returncode == 0, second.stderr
    assert [row.code for row in emulator.log] == [200, 200, 200]  # the stopped one ran to its end; no 402
    told = " ".join(second.stderr.split())  # -v lines are wrapped to the terminal's width
    assert "(given up; the upstream still runs it)" in told  # what the second search waited for


def test_sigterm_to_a_batch_with_sigint_ignored_ends_it_like_ctrl_c(
    tmp_path: Path, live_server: Callable[[Any], Any]
) -> None:
    """A batch started in the background of a script (or by cron) has SIGINT ignored, so the event loop
    installs no interrupt handler of its own; SIGTERM must still end it with its summary and 143, never
    with the traceback of whichever search it interrupted (tried five times: the signal lands anywhere)."""
    server = live_server(create_app(quota=10**6, rate_limit=10**6, concurrency=8, queue_size=8))
    shots, env = tmp_path / "shots", searching_at(server.url)
    shots.mkdir()
    for n in range(60):
        shutil.copy(DEMO, shots / f"shot-{n:02}.jpg")
    ignoring = (  # what a shell does for a background job: SIGINT ignored, inherited through exec
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN);"
        " os.execv(sys.executable, [sys.executable, '-m', 'anisearch', *sys.argv[1:]])"
    )
    command = [sys.executable, "-c", ignoring, "search", str(shots), "--no-cache", "--json", "-j", "8"]
    for _ in range(5):
        with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
            assert process.stdout is not None
            assert process.stderr is not None
            assert process.stdout.readline()  # searching, the loop busy with the searches
            process.send_signal(signal.SIGTERM)
            process.stdout.read()
            errors = process.stderr.read().decode()
            code = process.wait(timeout=60)
        assert code == 143, errors
        assert "Traceback" not in errors
        assert "interrupted after" in errors


MISSING = (  # the command with some standard streams closed (a shell's `<&-`, `2>&-`), or open on a file
    # it cannot write (what a wrapper script, such as a pyenv shim, leaves on a descriptor it found free)
    "import os, sys\n"
    "for fd in map(int, sys.argv[2].split(',')):\n"
    "    if sys.argv[1] == 'closed':\n"
    "        os.close(fd)\n"
    "    else:\n"
    "        os.dup2(os.open(os.devnull, os.O_RDONLY), fd)\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'anisearch', *sys.argv[3:]])\n"
)


def run_without(
    how: str, streams: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``anisearch ARGS`` started with the standard streams ``streams`` (``"0"``, ``"2"``, ``"0,2"``)
    ``closed`` or ``read-only``; what it writes to the others is captured."""
    return subprocess.run(
        [sys.executable, "-c", MISSING, how, streams, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_search_of_stdin_when_there_is_none_is_a_usage_error() -> None:
    """``anisearch search - <&-`` was a Python traceback ('NoneType' object has no attribute 'isatty')."""
    done = run_without("closed", "0", "search", "-")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(
        "anisearch: error: - reads the image from standard input, and there is none to read (closed, or not "
        "open for reading)\nhint: pipe an image in: anisearch search - < shot.jpg\n"
    )


@pytest.mark.parametrize("how", ["closed", "read-only"])
def test_without_stderr_the_results_and_exit_codes_stay_true(
    tmp_path: Path, live_server: Callable[[Any], Any], how: str
) -> None:
    """With stderr closed (``2>&-``) a batch printed no result and exited 1 ("no confident match"), and a
    matched search printed its table and exited 1: every note to stderr failed. What goes to stderr is now
    lost, and nothing else."""
    server = live_server(create_app(quota=10**6, rate_limit=10**6))
    env = searching_at(server.url)
    shots = tmp_path / "shots"
    shots.mkdir()
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(DEMO, shots / name)
    batch = run_without(how, "0,2", "search", str(shots), "--no-cache", env=env)
    assert batch.returncode == 0
    assert sorted(line.split(": ", 1)[0] for line in batch.stdout.splitlines()) == [
        str(shots / "a.jpg"),
        str(shots / "b.jpg"),
    ]
    assert all("Kokoro Connect" in line for line in batch.stdout.splitlines())
    one = run_without(how, "2", "search", str(DEMO), "--no-cache", env=env)
    assert one.returncode == 0
    assert one.stdout.startswith("Kokoro Connect")
