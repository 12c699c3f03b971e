"""Time anisearch's image preparation against a bare Pillow baseline measured in the same run.

    python benchmarks/bench_image.py [--repeat N] [--box WxH]

For each input (the shared sample screenshots, read in place, and synthetic 4K PNG and JPEG frames
made in memory) it prints the best (least) CPU milliseconds over ``--repeat`` runs, the figure a shared
or busy machine disturbs least, of:

- baseline: ``Image.open`` + ``thumbnail(box, LANCZOS)`` (which decodes a JPEG at a reduced DCT scale) +
  ``save(JPEG, quality=85)``, the least any client does before uploading;
- prepare: :func:`anisearch._image.prepare` into the same box (sniffing, guards, EXIF, alpha, colour
  profile, the same decode, resize and encode, plus the SHA-256 digest of the source);
- prepare with ``cut_borders=True``;

and the bytes uploaded against the bytes of the source. The box is by default the one a search
prepares for trace.moe (320x320, the size its server describes).
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
from anisearch_providers.tracemoe import TraceMoe

if TYPE_CHECKING:
    from collections.abc import Callable

REPO = Path(__file__).resolve().parent.parent
SAMPLES = Path(os.environ.get("ANISEARCH_SHARED_DIR", REPO.parent / "shared")) / "upstream-samples"


def baseline(data: bytes, box: tuple[int, int]) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        image.thumbnail(box, Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG", quality=85)
        return out.getvalue()


def best_ms(work: Callable[[], object], repeat: int) -> float:
    """Least CPU time of one call over ``repeat`` calls, milliseconds."""
    work()  # warm caches (imports, ICC transforms, file system)
    times = []
    for _ in range(repeat):
        start = time.process_time()
        work()
        times.append((time.process_time() - start) * 1000)
    return min(times)


def box_size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


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
    parser.add_argument("--box", type=box_size, default=TraceMoe().limits.box, help="upload box, WxH pixels")
    arguments = parser.parse_args()
    repeat, box = arguments.repeat, arguments.box
    fitted = partial(prepare, max_width=box[0], max_height=box[1])
    header = (
        f"{'input':<22} {'source':>10} {'upload':>8} {'upload/src':>10} "
        f"{'baseline':>9} {'prepare':>9} {'ratio':>6} {'+borders':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, data in inputs():
        prepared = fitted(data)
        base_ms = best_ms(partial(baseline, data, box), repeat)
        prep_ms = best_ms(partial(fitted, data), repeat)
        cut_ms = best_ms(partial(fitted, data, cut_borders=True), repeat)
        print(
            f"{name:<22} {len(data):>10,} {len(prepared.data):>8,} {len(prepared.data) / len(data):>10.1%} "
            f"{base_ms:>7.1f}ms {prep_ms:>7.1f}ms {prep_ms / base_ms:>5.2f}x {cut_ms:>7.1f}ms"
        )
    print(
        f"\nbox {box[0]}x{box[1]}; CPU time, best of {repeat} runs after one warm-up; "
        "ratio = prepare / baseline (same process, same run)"
    )


if __name__ == "__main__":
    main()
