"""Start-up: ``import anisearch`` and ``anisearch --help`` next to ``python -c pass``, in one run.

    python benchmarks/bench_startup.py [--repeat N]

Each row starts a fresh interpreter (the one running this script, with its environment; bytecode is
written once to a temporary directory and read from there, as from an installed wheel) ``N`` times,
20 by default, after one warm-up run each; the rows take turns, so a burst of load from elsewhere hits
every row alike. It prints the median and p90 wall time of each row, the median minus the ``python -c
pass`` baseline, the target, and the machine (cores, load average) it ran on.

``anisearch --help`` runs the console script installed next to the interpreter, as a user types it;
without one (a source tree that was never installed) it runs ``python -m anisearch --help``.

:func:`measure` returns the figures for ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BASELINE = "python -c pass"
IMPORT = "import anisearch"
HELP = "anisearch --help"

TARGETS = {IMPORT: 0.150, HELP: 0.300}
"""Seconds of wall time (medians) that each row must stay within on a 2-core machine."""


@dataclass(frozen=True, slots=True)
class Row:
    """One command's wall times, in seconds."""

    name: str
    command: tuple[str, ...]
    median: float
    p90: float
    target: float | None


@dataclass(frozen=True, slots=True)
class Startup:
    """The rows of one run and the machine they ran on."""

    rows: dict[str, Row]
    cores: int
    load: tuple[float, float, float]
    repeat: int

    @property
    def baseline(self) -> float:
        return self.rows[BASELINE].median

    def within_targets(self) -> bool:
        return all(row.median <= row.target for row in self.rows.values() if row.target is not None)


def commands() -> dict[str, tuple[str, ...]]:
    """What each row runs."""
    python = sys.executable
    script = Path(python).with_name("anisearch")
    help_command = (str(script), "--help") if script.is_file() else (python, "-m", "anisearch", "--help")
    return {
        BASELINE: (python, "-c", "pass"),
        IMPORT: (python, "-c", "import anisearch"),
        HELP: help_command,
    }


def _once(command: tuple[str, ...], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
    return time.perf_counter() - started


def bytecode_env(cache: Path) -> dict[str, str]:
    """The environment with bytecode written once under ``cache`` and read from there afterwards.

    As from an installed wheel: an editable install run with ``PYTHONDONTWRITEBYTECODE`` would otherwise
    compile anisearch's sources again in every process.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


def measure(repeat: int = 20) -> Startup:
    """Time every row ``repeat`` times (taking turns) after one warm-up run each."""
    rows = commands()
    times: dict[str, list[float]] = {name: [] for name in rows}
    with tempfile.TemporaryDirectory() as cache:
        env = bytecode_env(Path(cache))
        for command in rows.values():
            _once(command, env)
        for _ in range(repeat):
            for name, command in rows.items():
                times[name].append(_once(command, env))
    return Startup(
        rows={
            name: Row(
                name=name,
                command=command,
                median=statistics.median(times[name]),
                p90=statistics.quantiles(times[name], n=10)[-1] if repeat > 1 else times[name][0],
                target=TARGETS.get(name),
            )
            for name, command in rows.items()
        },
        cores=os.cpu_count() or 1,
        load=os.getloadavg(),
        repeat=repeat,
    )


def report(result: Startup) -> str:
    """The table of one run, with the machine it ran on."""
    load = ", ".join(f"{value:.2f}" for value in result.load)
    lines = [
        f"start-up, {result.repeat} runs per row; {result.cores} cores, load average {load}",
        "",
        f"{'row':<20} {'median ms':>10} {'p90 ms':>8} {'- baseline':>11} {'target ms':>10}  verdict",
    ]
    for row in result.rows.values():
        extra = row.median - result.baseline
        target = f"{row.target * 1000:.0f}" if row.target is not None else "-"
        verdict = "" if row.target is None else ("ok" if row.median <= row.target else "OVER")
        shown_extra = "baseline" if row.name == BASELINE else f"{extra * 1000:+.1f}"
        lines.append(
            f"{row.name:<20} {row.median * 1000:>10.1f} {row.p90 * 1000:>8.1f} {shown_extra:>11} "
            f"{target:>10}  {verdict}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="fresh processes per row (default 20)")
    args = parser.parse_args()
    result = measure(args.repeat)
    print(report(result))
    sys.exit(0 if result.within_targets() else 1)


if __name__ == "__main__":
    main()
