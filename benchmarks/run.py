"""Every performance figure of anisearch in one table, with same-run baselines and the machine it ran on.

    python -m benchmarks            # about 2-4 minutes on 2 cores
    python -m benchmarks --quick    # fewer repetitions, for a smoke run

Needs the ``bench`` extra (``pip install -e '.[bench]'``: the peers aiotracemoeapi and PicImageSearch)
and, for the Redis rows, ``redis-server`` on ``PATH``. Nothing leaves the machine: every client talks to
the trace.moe emulator on 127.0.0.1. Read ratios, not absolute numbers: each ratio's baseline was timed in
the same run, interleaved with it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_ledger
import bench_memory
import bench_peers
from bench_router import RedisServer

ROOT = Path(__file__).resolve().parent
SAMPLES = ("tinted-good.jpg", "flipped-good.webp", "border-bad.jpg")


@dataclass
class Line:
    section: str
    figure: str
    value: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    verdict: str = ""


def judged(ratio: float, limit: float, *, at_least: bool = False) -> str:
    good = ratio >= limit if at_least else ratio <= limit
    return "ok" if good else "MISS"


def samples_dir() -> Path:
    """``../shared/upstream-samples`` (or ``$ANISEARCH_SHARED_DIR/upstream-samples``) when it is there;
    else ``examples/``, which holds the first sample (trace.moe's demo frame) in every clone."""
    shared = Path(os.environ.get("ANISEARCH_SHARED_DIR", ROOT.parent.parent / "shared")) / "upstream-samples"
    for candidate in (shared, ROOT.parent / "examples"):
        if (candidate / SAMPLES[0]).is_file():
            return candidate
    raise SystemExit(f"the sample screenshot {SAMPLES[0]} was found neither in {shared} nor in examples/")


def per_search_lines(sample: Path, ledgers: dict[str, str], count: int) -> list[Line]:
    source = sample.read_bytes()
    upload = bench_peers.tracemoe_upload(sample)
    lines = []
    for latency in (0.0, 0.05):
        rows = bench_peers.run_async(
            partial(bench_peers.per_search, source, upload, ledgers, latency=latency, count=count)
        )
        base = rows[0]
        section = f"per search, {latency * 1000:.0f} ms upstream"
        limit = 1.3 if latency == 0 else 1.05
        for row in rows:
            ratio = row.median / base.median
            cpu = row.cpu / base.cpu
            is_ours = row.label.startswith("anisearch")
            if row.label == bench_peers.FLOOR:  # what the target leaves for routing, parsing and results
                left = limit * base.median - row.median
                lines.append(
                    Line(section, row.label, f"{row.median:.1f} ms (cpu {row.cpu:.1f} ms)",
                         f"{base.median:.1f} ms", f"{ratio:.2f}x (cpu {cpu:.1f}x)",
                         f"{limit}x leaves {left:.1f} ms, cpu 2x {2 * base.cpu - row.cpu:.1f} ms")
                )  # fmt: skip
                continue
            lines.append(
                Line(
                    section,
                    row.label,
                    f"{row.median:.1f} ms (cpu {row.cpu:.1f} ms)",
                    f"{base.median:.1f} ms" if row is not base else "baseline",
                    f"{ratio:.2f}x (cpu {cpu:.1f}x)",
                    f"<= {limit}x, cpu <= 2x" if "SQLite" in row.label else "",
                    judged(ratio, limit) + ("" if cpu <= 2 else ", cpu MISS")
                    if is_ours and "SQLite" in row.label
                    else "",
                )
            )
    return lines


def cache_lines(sample: Path, root: Path, count: int) -> list[Line]:
    misses = bench_peers.variants(sample, count)
    figures = bench_peers.run_async(lambda: bench_peers.cache_in_process(sample, misses, root, count))
    ratio = figures["hit"] / figures["floor"]
    return [
        Line("cache, in process", "hit (same file again)", f"{figures['hit']:.2f} ms",
             f"{figures['floor']:.2f} ms floor", f"{ratio:.1f}x", "<= 1 ms, <= 3x floor",
             judged(figures["hit"], 1.0) if ratio <= 3 else "MISS"),
        Line("cache, in process", "miss (new image, 50 ms upstream)", f"{figures['miss']:.1f} ms",
             f"{figures['hit']:.2f} ms hit", f"{figures['miss'] / figures['hit']:.0f}x"),
    ]  # fmt: skip


def command_line_lines(sample: Path, root: Path, runs: int) -> list[Line]:
    figures = bench_peers.command_line(sample, root, runs)
    base = figures["python -c pass"]
    peer = figures["peer one-search script (aiotracemoeapi)"]
    miss = figures["one CLI search (cache miss)"]
    hit = figures["one CLI search (cache hit)"]
    targets = {"import anisearch": 150.0, "anisearch --help": 300.0}
    lines = []
    for name, value in figures.items():
        line = Line(
            "start-up and CLI", name, f"{value:.0f} ms", f"{base:.0f} ms python", f"{value / base:.1f}x"
        )
        if name in targets:
            line.target, line.verdict = f"<= {targets[name]:.0f} ms", judged(value, targets[name])
        if name == "one CLI search (cache miss)":
            line.baseline, line.ratio = f"{peer:.0f} ms peer", f"{miss / peer:.2f}x"
            line.target, line.verdict = "<= 1.1x peer", judged(miss / peer, 1.1)
        if name == "one CLI search (cache hit)":
            line.baseline, line.ratio = f"{miss:.0f} ms miss", f"{hit / miss:.2f}x"
            line.target, line.verdict = "<= 0.5x miss", judged(hit / miss, 0.5)
        if name == bench_peers.CLI_FLOOR:  # what the target leaves for anisearch's own modules and work
            line.baseline, line.ratio = f"{peer:.0f} ms peer", f"{value / peer:.2f}x"
            line.target = f"1.1x leaves {1.1 * peer - value:.0f} ms"
        lines.append(line)
    return lines


def utilisation_lines(ledgers: dict[str, str], per_process: int, rounds: int = 3) -> list[Line]:
    """Slot hand-over: each feeder ``rounds`` times, the rounds interleaved, medians shown."""
    section = "slot hand-over (1 slot, 50 ms)"
    shared = {name: url for name, url in ledgers.items() if name != "memory"}
    shares: dict[str, list[float]] = {}
    refused: dict[str, int] = {}
    for _ in range(rounds):
        shares.setdefault("bare", []).append(bench_ledger.bare_rate(per_process * 4) / 20)
        for name, url in shared.items():
            share, count = bench_ledger.utilisation_processes(url, 4, per_process)
            shares.setdefault(name, []).append(share)
            refused[name] = refused.get(name, 0) + count
        share, count = bench_ledger.utilisation_tasks(ledgers["SQLite"], 32, max(1, per_process // 4))
        shares.setdefault("tasks", []).append(share)
        refused["tasks"] = refused.get("tasks", 0) + count
    median = {name: statistics.median(values) for name, values in shares.items()}
    bare = median["bare"]
    lines = [Line(section, f"one bare client, back to back (median of {rounds})", f"{bare:.0%} of 20/s",
                  "baseline")]  # fmt: skip
    labels = {name: f"4 processes, {name} ledger" for name in shared} | {
        "tasks": "32 tasks, one client, SQLite ledger"
    }
    for name, label in labels.items():
        share, ratio = median[name], median[name] / bare
        value = f"{share:.0%} of 20/s, {refused[name]} x 402"
        verdict = judged(ratio, 0.95, at_least=True)
        lines.append(Line(section, label, value, f"{bare:.0%}", f"{ratio:.2f}x", ">= 0.95x", verdict))
    return lines


def ledger_lines(ledgers: dict[str, str], count: int, root: Path) -> list[Line]:
    # The SQLite sizes take turns, five rounds, each figure the median of its rounds: a drift in the
    # machine's speed during the run then moves every size alike instead of one of them. Each size has a
    # file of its own, so none runs on the free pages and the WAL another size left behind.
    rounds: dict[int, list[float]] = {0: [], 10_000: [], 100_000: []}
    for _ in range(5):
        for events, values in rounds.items():
            values.append(bench_memory.ledger_cost(f"{ledgers['SQLite']}-{events}", count, events))
    empty = statistics.median(rounds[0])
    lines = []
    for name, url in ledgers.items():
        value = empty if name == "SQLite" else bench_memory.ledger_cost(url, count)  # memory, Redis
        # The quota engine's limits: time on the two local stores; steps, counted, on the shared ones.
        if name == "SQLite":
            steps = bench_ledger.counted_sqlite_transactions(root / "count.sqlite3", count)
            shown, target = f"{value:.2f} ms, {steps:.2f} transactions", "<= 2 ms, <= 2 transactions"
            verdict = judged(max(value, steps), 2.0)  # both limits are 2
        elif name == "Redis":
            steps = bench_ledger.counted_redis_round_trips(url, count)[1]
            shown, target = f"{value:.2f} ms, {steps:.2f} round trips", "<= 2 round trips"
            verdict = judged(steps, 2.0)
        else:
            shown, target = f"{value:.2f} ms", "<= 0.5 ms"
            verdict = judged(value, 0.5)
        lines.append(Line("ledger per search (reserve + settle)", f"{name}, empty", shown, target=target,
                          verdict=verdict))  # fmt: skip
    for events in (10_000, 100_000):
        value = statistics.median(rounds[events])
        lines.append(Line("ledger per search (reserve + settle)", f"SQLite, {events:,} recorded searches",
                          f"{value:.2f} ms", f"{empty:.2f} ms empty", f"{value / empty:.2f}x", "<= 1.2x",
                          judged(value / empty, 1.2)))  # fmt: skip
    return lines


def memory_lines(root: Path) -> list[Line]:
    lines = []
    for name, path in bench_memory.make_inputs(root).items():
        size, growth = bench_memory.peak_rss(path)
        allowed = size + 80 * bench_memory.MIB
        lines.append(Line("peak memory while preparing", name, f"+{growth / bench_memory.MIB:.0f} MiB",
                          f"{size / bench_memory.MIB:.0f} MiB input", f"{growth / size:.1f}x input",
                          "<= input + 80 MiB", judged(growth, allowed)))  # fmt: skip
    return lines


def upload_lines(samples: list[Path]) -> list[Line]:
    return [
        Line("bytes uploaded to trace.moe", name, f"{upload:,} B", f"{source:,} B source",
             f"{upload / source:.2f}x", f"640x360 upload: {wide:,} B; vector body: {vector} B")
        for name, source, upload, wide, vector in bench_peers.upload_sizes(samples)
    ]  # fmt: skip


def render(lines: list[Line], header: str) -> str:
    columns = ("figure", "value", "baseline", "ratio", "target", "")
    cells = [
        [line.figure, line.value, line.baseline, line.ratio, line.target, line.verdict] for line in lines
    ]
    widths = [max(len(column), *(len(row[i]) for row in cells)) for i, column in enumerate(columns)]
    out = [header, ""]
    section = None
    for line, row in zip(lines, cells, strict=True):
        if line.section != section:
            section = line.section
            out.append(f"-- {section}")
        out.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    args = parser.parse_args()
    scale = 0.3 if args.quick else 1.0
    started = time.monotonic()
    before = bench_memory.machine()
    samples = samples_dir()
    present = [samples / name for name in SAMPLES if (samples / name).is_file()]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ledgers = {"memory": "memory://", "SQLite": f"sqlite:///{root / 'ledger.sqlite3'}"}
        redis = None
        binary = shutil.which("redis-server")
        if binary is not None:
            redis = RedisServer(binary, root)
            ledgers["Redis"] = redis.url
        try:
            lines = [
                *per_search_lines(samples / SAMPLES[0], ledgers, int(50 * scale)),
                *cache_lines(samples / SAMPLES[0], root, int(30 * scale)),
                *command_line_lines(samples / SAMPLES[0], root, max(2, int(7 * scale))),
                *utilisation_lines(ledgers, max(4, int(10 * scale))),
                *ledger_lines(ledgers, int(150 * scale), root),
                *memory_lines(root),
                *upload_lines(present),
            ]
        finally:
            if redis is not None:
                redis.stop()
    header = (
        f"anisearch benchmarks: {before} (at start); load at end {bench_memory.machine().split('load ')[1]}"
        f"; took {time.monotonic() - started:.0f} s"
        + ("" if "Redis" in ledgers else "; no redis-server on PATH: Redis rows skipped")
        + (
            ""
            if len(present) == len(SAMPLES)
            else f"; only {SAMPLES[0]} found (no ../shared/upstream-samples): one upload row"
        )
    )
    print(render(lines, header))
    startup = ROOT / "bench_startup.py"
    if startup.is_file():  # start-up figures in detail, when that script is present
        print()
        subprocess.run([sys.executable, str(startup)], check=False)


if __name__ == "__main__":
    main()
