"""Time a search of a new picture with the default providers (trace.moe, then whatanimeisthis) against the
image work trace.moe's upload needs, measured in the same run.

    python benchmarks/bench_default_providers.py [--count N]

Each search is of a picture never seen before (so nothing comes from the cache), 1920x1080 as a video
player saves it (JPEG and PNG), with the result cache off and on. The answers come at once from an
in-process transport (trace.moe's recorded answer, confident, so whatanimeisthis is not asked): every
millisecond is the client's own. The baseline is :func:`anisearch._image.prepare` of the same picture for
trace.moe's 320x320 box, the least any client does before uploading it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

import anisearch
from anisearch import _image

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ANISEARCH_SHARED_DIR", REPO.parent / "shared")) / "upstream-samples"
FRAME = REPO / "examples" / "tinted-good.jpg"
TRACE, SITE = "https://trace.test", "https://site.test"


def answer_body() -> dict[str, object]:
    """trace.moe's recorded answer to the demo frame (or a one-hit answer in a plain clone)."""
    recorded = SHARED / "api-v1-search-tinted-good-2021.json"
    if recorded.is_file():
        body: dict[str, object] = json.loads(recorded.read_text())
        return body
    hit = {
        "anilist": 11887,
        "filename": "x.mp4",
        "episode": 5,
        "from": 1169.2,
        "to": 1174.9,
        "similarity": 0.97,
    }
    return {"frameCount": 1, "error": "", "result": [hit]}


def pictures(kind: str, count: int) -> list[bytes]:
    """``count`` different 1920x1080 pictures (the demo frame with a few patches painted over)."""
    rng = random.Random(7)  # noqa: S311 - the same pictures every run, not a secret
    base = Image.open(FRAME).convert("RGB").resize((1920, 1080), Image.Resampling.LANCZOS)
    made = []
    for _ in range(count):
        picture = base.copy()
        for _ in range(6):
            x, y = rng.randrange(1920), rng.randrange(1080)
            picture.paste(
                (rng.randrange(256), rng.randrange(256), rng.randrange(256)), (x, y, x + 480, y + 270)
            )
        out = io.BytesIO()
        picture.save(out, kind, **({"quality": 90} if kind == "JPEG" else {}))
        made.append(out.getvalue())
    return made


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=30, help="pictures searched per row")
    args = parser.parse_args()
    body = answer_body()
    transport = httpx.MockTransport(lambda _request: httpx.Response(200, json=body))
    options = {"tracemoe": {"url": TRACE}, "whatanimeisthis": {"url": SITE}}
    print(f"new 1920x1080 pictures, providers tracemoe then whatanimeisthis, median of {args.count}")
    print(f"{'picture':6} {'cache':6} {'search':>10} {'prepare for trace.moe':>24} {'ratio':>7}")
    for kind in ("JPEG", "PNG"):
        sources = pictures(kind, args.count + 1)
        for cache in ("off", "on"):
            with tempfile.TemporaryDirectory() as home:
                settings = anisearch.Settings.load(
                    providers=["tracemoe", "whatanimeisthis"],
                    provider_options=options,
                    cache="off" if cache == "off" else f"{home}/cache.sqlite3",
                    ledger=f"sqlite:///{home}/ledger.sqlite3",
                    metadata="off",
                )
                searched, prepared = [], []
                with anisearch.Client(settings, transport) as client:
                    client.search(sources[0])  # warm: imports, connections, the ledger file
                    for source in sources[1:]:  # taking turns with the baseline
                        start = time.perf_counter()
                        result = client.search(source)
                        searched.append(time.perf_counter() - start)
                        assert not result.cached, "a new picture was answered from the cache"
                        start = time.perf_counter()
                        _image.prepare(source, max_width=320, max_height=320)
                        prepared.append(time.perf_counter() - start)
            search, floor = median_ms(searched), median_ms(prepared)
            print(f"{kind:6} {cache:6} {search:8.1f} ms {floor:21.1f} ms {search / floor:6.2f}x")


if __name__ == "__main__":
    main()
