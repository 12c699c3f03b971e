"""Time anisearch's image preparation against a bare Pillow baseline measured in the same run.

    python benchmarks/bench_image.py [--repeat N]

For each input (the shared sample screenshots, read in place, and synthetic 4K PNG and JPEG frames
made in memory) it prints the best (least) milliseconds over ``--repeat`` runs, the figure a shared or
busy machine disturbs least, of:

- baseline: ``Image.open`` + ``thumbnail(640x360, LANCZOS)`` + ``save(JPEG, quality=85, optimize=True)``,
  the least any client does before uploading;
- prepare: :func:`anisearch._image.prepare` (sniffing, guards, EXIF, alpha, the same resize and encode,
  plus the SHA-256 digest and the 33-number colour layout descriptor);
- prepare with ``cut_borders=True``;

and the bytes uploaded against the bytes of the source.
"""

from __future__ import annotations

import argparse
import io
import os
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from anisearch._image import prepare

if TYPE_CHECKING:
    from collections.abc import Callable

REPO = Path(__file__).resolve().parent.parent
SAMPLES = Path(os.environ.get("ANISEARCH_SHARED_DIR", REPO.parent / "shared")) / "upstream-samples"


def baseline(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        image.thumbnail((640, 360), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG", quality=85, optimize=True)
        return out.getvalue()


def best_ms(work: Callable[[], object], repeat: int) -> float:
    work()  # warm caches (imports, ICC transforms, file system)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    return min(times)


def inputs() -> list[tuple[str, bytes]]:
    found = [
        (name, (SAMPLES / name).read_bytes())
        for name in ("tinted-good.jpg", "flipped-good.webp", "border-bad.jpg")
    ]
    with Image.open(SAMPLES / "tinted-good.jpg") as sample:
        frame = sample.convert("RGB").resize((3840, 2160), Image.Resampling.LANCZOS)
    png, jpeg = io.BytesIO(), io.BytesIO()
    frame.save(png, "PNG")
    frame.save(jpeg, "JPEG", quality=95)
    return [*found, ("synthetic 4K PNG", png.getvalue()), ("synthetic 4K JPEG q95", jpeg.getvalue())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per input (the best is reported)")
    repeat = parser.parse_args().repeat
    header = (
        f"{'input':<22} {'source':>10} {'upload':>8} {'upload/src':>10} "
        f"{'baseline':>9} {'prepare':>9} {'ratio':>6} {'+borders':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, data in inputs():
        prepared = prepare(data)
        base_ms = best_ms(partial(baseline, data), repeat)
        prep_ms = best_ms(partial(prepare, data), repeat)
        cut_ms = best_ms(partial(prepare, data, cut_borders=True), repeat)
        print(
            f"{name:<22} {len(data):>10,} {len(prepared.data):>8,} {len(prepared.data) / len(data):>10.1%} "
            f"{base_ms:>7.1f}ms {prep_ms:>7.1f}ms {prep_ms / base_ms:>5.2f}x {cut_ms:>7.1f}ms"
        )
    print(f"\nbest of {repeat} runs after one warm-up; ratio = prepare / baseline (same process, same run)")


if __name__ == "__main__":
    main()
