"""Peak memory of preparing large inputs, and the SQLite ledger's cost as it fills.

Inputs are generated in a temporary directory: a ~25 MB JPEG (a noisy 7000x5000 photo), a 4K PNG
(noise, so it barely compresses) and a 100 MB MP4 (one encoded 1080p frame, then a ``free`` box of
padding, which every demuxer skips). Each is prepared in a fresh interpreter; the figure is its peak RSS
minus its RSS right after importing anisearch, Pillow, numpy and PyAV (what preparing the input costs).
"""

from __future__ import annotations

import io
import os
import sqlite3
import statistics
import struct
import subprocess
import sys
import textwrap
import time
from typing import TYPE_CHECKING

import anyio

from anisearch._ledger import Ticket, open_ledger
from anisearch._models import Quota
from anisearch_providers.tracemoe import TraceMoe

if TYPE_CHECKING:
    from pathlib import Path

MIB = 1024 * 1024
RSS_SCRIPT = textwrap.dedent(
    """
    import sys
    import av, numpy
    from anisearch import _image

    def peak():  # VmHWM, bytes; the child may inherit its parent's peak through fork, so reset it first
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    before = peak()
    _image.prepare(sys.argv[1])
    print(before, peak())
    """
)


def make_inputs(root: Path) -> dict[str, Path]:
    """Write the three large inputs into ``root``."""
    import av
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    width, height = 7000, 5000
    base = (np.indices((height // 10, width // 10)).sum(0) % 256).astype(np.uint8)
    photo = Image.fromarray(np.stack([base] * 3, -1), "RGB").resize((width, height))
    noise = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
    paths = {"25 MiB JPEG": root / "large.jpg", "4K PNG": root / "4k.png", "100 MB MP4": root / "large.mp4"}
    Image.blend(photo, noise, 0.4).save(paths["25 MiB JPEG"], quality=94)
    Image.fromarray(rng.integers(0, 256, (2160, 3840, 3), dtype=np.uint8), "RGB").save(
        paths["4K PNG"], compress_level=1
    )
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        frame = av.VideoFrame.from_image(photo.resize((1920, 1080)))  # type: ignore[no-untyped-call]
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    padding = 100 * MIB - len(out.getvalue())
    with paths["100 MB MP4"].open("wb") as file:
        file.write(out.getvalue())
        file.write(struct.pack(">I4s", padding, b"free"))
        left = padding - 8
        while left > 0:
            file.write(bytes(min(left, MIB)))
            left -= MIB
    return paths


def peak_rss(path: Path) -> tuple[int, int]:
    """(input bytes, peak RSS growth while preparing it, bytes) in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(path)], check=True, capture_output=True, text=True
    ).stdout.split()
    return path.stat().st_size, int(out[1]) - int(out[0])


TOLD = [
    Quota(provider="tracemoe", limit=10**9, used=0, window="rolling-24h"),
    Quota(provider="tracemoe", limit=10**9, used=0, window="minute", source="headers"),
]


async def _searches(url: str, count: int, events: int) -> list[float]:
    windows = TraceMoe("http://127.0.0.1").windows()
    ledger = open_ledger(url)
    try:
        await ledger.clear()
        ticket = await ledger.reserve("tracemoe", "guest", windows, trust_estimate=True)
        assert isinstance(ticket, Ticket)
        await ledger.settle(ticket, "charged", observations=TOLD)  # limits out of reach
        if events and url.startswith("sqlite:"):
            _record_events(url.removeprefix("sqlite:///"), [window.name for window in windows], events)
        timings = []
        for index in range(count + 10):
            start = time.perf_counter()
            ticket = await ledger.reserve("tracemoe", "guest", windows, trust_estimate=True)
            if not isinstance(ticket, Ticket):
                raise SystemExit(f"the ledger refused: {ticket}")
            await ledger.settle(ticket, "charged")
            if index >= 10:
                timings.append((time.perf_counter() - start) * 1000)
        await ledger.clear()
    finally:
        await ledger.aclose()
    return timings


def _record_events(path: str, windows: list[str], events: int) -> None:
    """``events`` settled searches in every window, leaving in an hour (written directly: fast)."""
    now = int(time.time() * 1_000_000)
    conn = sqlite3.connect(path)
    with conn:
        for window in windows:
            conn.executemany(
                "INSERT INTO units VALUES (?, ?, ?, ?, ?, 0)",
                (("tracemoe", "guest", window, f"e{n}", now + 3_600_000_000 + n) for n in range(events)),
            )
    conn.close()


def ledger_cost(url: str, count: int, events: int = 0) -> float:
    """Median ms of one reserve + settle on the ledger at ``url`` holding ``events`` recorded searches."""
    return statistics.median(anyio.run(_searches, url, count, events))


def machine() -> str:
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return f"{os.cpu_count()} cores, load {load}, Python {sys.version.split()[0]}, {sys.platform}"
