"""The tracemoe provider against every real trace.moe answer in ``../shared/upstream-samples``.

The samples are read in place: the four current-API JSON bodies (2021-2025) and the 34 recorded
exchanges of 2026-05 (status, headers and body as the server sent them).
"""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml

from anisearch._exceptions import ImageFetchError
from anisearch_providers.tracemoe import TraceMoe

if TYPE_CHECKING:
    from anisearch._models import Hit

NOW = datetime(2026, 5, 7, 11, 15, 0, tzinfo=UTC)
RECORDINGS = "tracemoe-recordings-2026-05"
CURRENT_API_BODIES = {
    "api-v1-search-tinted-good-2021.json",
    "api-v1-search-raw-2023-01.json",
    "api-v1-search-anilistinfo-excerpt-2023-12.json",
    "api-search-milvus-era-2025-09.json",
}
# Transport framing the recorder already undid: the stored body is decoded JSON, not gzip.
_FRAMING = {"content-encoding", "transfer-encoding", "content-length"}
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it: 10x faster


def provider() -> TraceMoe:
    return TraceMoe(clock=lambda: NOW)


def json_response(path: Path, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        200,
        content=path.read_bytes(),
        headers={"content-type": "application/json; charset=utf-8", **(headers or {})},
        request=httpx.Request("GET", "https://api.trace.moe/search"),
    )


def load_recording(path: Path) -> tuple[dict[str, Any], httpx.Response]:
    """A recorded exchange as the httpx.Response the provider would have been handed."""
    record = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    req, resp = record["request"], record["response"]
    if resp["body_json"] is not None:
        content = json.dumps(resp["body_json"], ensure_ascii=False).encode()
    elif resp["body_text"] is not None:
        content = resp["body_text"].encode()
    else:
        content = base64.b64decode(resp["body_b64"] or "")
    headers = {name: str(value) for name, value in resp["headers"].items() if name.lower() not in _FRAMING}
    request = httpx.Request(req["method"], req["url"], headers=req["headers"] or {})
    return record, httpx.Response(resp["status"], headers=headers, content=content, request=request)


def recording_paths(samples_dir: Path) -> list[Path]:
    return sorted((samples_dir / RECORDINGS).glob("*.yaml"))


def shared_samples() -> Path:
    """Where the ``samples`` fixture points (tests/conftest.py), known before fixtures exist."""
    repo = Path(__file__).resolve().parents[3]
    return Path(os.environ.get("ANISEARCH_SHARED_DIR", repo.parent / "shared")) / "upstream-samples"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize over the files actually present, so a new recording is tested without a code change."""
    samples_dir = shared_samples()
    if "recording" in metafunc.fixturenames:
        paths = recording_paths(samples_dir)
        metafunc.parametrize("recording", paths, ids=[path.stem for path in paths])
    if "body_file" in metafunc.fixturenames:
        names = sorted(
            path.name for path in samples_dir.glob("*.json") if not path.name.startswith("legacy-")
        )
        metafunc.parametrize("body_file", names)


def expected_preview_expiry(date_header: str) -> datetime:
    date = datetime.strptime(date_header, "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=UTC)
    return date.replace(minute=0, second=0) + timedelta(hours=1, seconds=300)


# ---------------------------------------------------------------- inventory


def test_every_sample_is_covered(samples: Path) -> None:
    assert shared_samples().resolve() == samples.resolve()
    assert len(recording_paths(samples)) == 34
    current = {path.name for path in samples.glob("*.json") if not path.name.startswith("legacy-")}
    assert current == CURRENT_API_BODIES


# ---------------------------------------------------------------- recordings


def check_hits_mirror_items(hits: list[Hit], items: list[dict[str, Any]]) -> None:
    assert len(hits) == len(items)
    assert [hit.similarity for hit in hits] == sorted((hit.similarity for hit in hits), reverse=True)
    for hit in hits:
        item = hit.raw
        assert item in items
        assert hit.provider == "tracemoe"
        assert 0.0 <= hit.similarity <= 1.0
        assert hit.similarity == pytest.approx(item["similarity"])
        assert hit.start_seconds == item["from"]
        assert hit.end_seconds == item["to"]
        assert hit.episode == item["episode"]
        assert hit.filename == item["filename"]
        assert hit.video_url == item["video"]
        assert hit.image_url == item["image"]


def test_recording(recording: Path) -> None:
    record, response = load_recording(recording)
    tracemoe = provider()
    body = record["response"]["body_json"]
    path = httpx.URL(record["request"]["url"]).path

    observed = tracemoe.observe(response)
    headers = record["response"]["headers"]
    (rate,) = observed  # none of the recorded answers is a 402 or a 429
    assert (rate.window, rate.limit, rate.source) == ("minute", 100, "headers")
    assert rate.remaining == int(headers["x-ratelimit-remaining"])
    assert rate.resets_at == datetime.fromtimestamp(int(headers["x-ratelimit-reset"]), UTC)

    if path == "/me":
        (quota,) = tracemoe.parse_quota(response)
        assert (quota.window, quota.scope, quota.source) == ("rolling-24h", "guest", "upstream")
        assert quota.limit == body["quota"] == 100
        assert quota.used == int(body["quotaUsed"])  # recorded as a JSON string
        assert quota.remaining == 100 - int(body["quotaUsed"])
        assert (quota.concurrency, quota.priority) == (1, 0)
        assert "id" not in quota.raw
        assert body["id"] not in quota.model_dump_json()
        assert body["id"] not in repr(quota)
    elif response.status_code == 200:
        answer = tracemoe.parse_search(response)
        items = body["result"]
        check_hits_mirror_items(answer.hits, items)
        assert answer.frames_searched == body["frameCount"]
        assert answer.quota is None  # 2026-05 bodies predate quota/quotaUsed
        expiry = expected_preview_expiry(headers["Date"])
        for hit in answer.hits:
            info = hit.raw["anilist"]
            assert hit.anilist_id == info["id"]
            assert hit.mal_id == info["idMal"]
            assert hit.title is not None
            assert hit.title.chinese == info["title"]["chinese"]
            assert hit.title.romaji == info["title"]["romaji"]
            assert hit.title.english == info["title"]["english"]
            assert hit.synonyms == info["synonyms"]
            assert hit.is_adult is info["isAdult"]
            # the whole AniList record comes back (V2+): what it says is kept, not looked up again
            assert (hit.format, hit.season, hit.season_year, hit.site_url) == (
                info["format"],
                info["season"],
                info["seasonYear"],
                info["siteUrl"],
            )
            assert (hit.episode_count, hit.episode_minutes) == (info["episodes"], info["duration"])
            assert hit.cover_image_url == info["coverImage"]["large"]
            assert hit.at_seconds == hit.raw["at"]
            assert hit.episode_duration_seconds == pytest.approx(hit.raw["duration"])
            assert hit.preview_expires_at == expiry
    else:
        with pytest.raises(ImageFetchError) as caught:
            tracemoe.parse_search(response)
        assert caught.value.status_code == 403
        assert caught.value.provider == "tracemoe"
        assert caught.value.message == body["error"]


def test_recorded_moonlight_mile(samples: Path) -> None:
    _, response = load_recording(samples / RECORDINGS / "search__01-moonlight-mile-frame.yaml")
    best = provider().parse_search(response).hits[0]
    assert best.anilist_id == 2929
    assert best.title is not None
    assert best.title.chinese == "Moonlight 2 Touch Down"
    assert best.title.english is None
    assert best.episode == 5
    assert (best.start_seconds, best.at_seconds, best.end_seconds) == (832.7494, 836.7534, 836.8368)
    assert best.episode_duration_seconds == 1499.9583
    assert best.similarity == pytest.approx(0.9579, abs=1e-4)
    assert best.preview_expires_at == datetime(2026, 5, 7, 12, 5, tzinfo=UTC)


def test_recorded_placeholder_image_is_a_normal_answer(samples: Path) -> None:
    """The image host served a placeholder for a missing URL: a 200 with ten weak matches, not an error."""
    _, response = load_recording(samples / RECORDINGS / "search__16-image-fetch-fail.yaml")
    answer = provider().parse_search(response)
    assert len(answer.hits) == 10
    assert all(hit.similarity < 0.5 for hit in answer.hits)


def test_recorded_quota_after_searches(samples: Path) -> None:
    _, response = load_recording(samples / RECORDINGS / "me__16-post-search-quota.yaml")
    (quota,) = provider().parse_quota(response)
    assert (quota.limit, quota.used, quota.remaining) == (100, 18, 82)


# ---------------------------------------------------------------- JSON bodies


def test_current_api_body(samples: Path, body_file: str) -> None:
    body = json.loads((samples / body_file).read_text(encoding="utf-8"))
    answer = provider().parse_search(json_response(samples / body_file))
    check_hits_mirror_items(answer.hits, body["result"])
    assert answer.frames_searched == body["frameCount"]


def test_tinted_good_2021(samples: Path) -> None:
    answer = provider().parse_search(json_response(samples / "api-v1-search-tinted-good-2021.json"))
    best = answer.hits[0]
    assert best.anilist_id == 11887
    assert best.episode == 5
    assert best.start_seconds is not None
    assert best.end_seconds is not None
    assert 1169 <= best.start_seconds < best.end_seconds <= 1175
    assert best.similarity == pytest.approx(0.9759, abs=1e-4)
    assert best.title is None  # no anilistInfo: anilist is a bare int
    assert best.at_seconds is None
    assert best.video_url is not None
    assert best.video_url.startswith("https://media.trace.moe/video/11887/")
    assert "t=1172.045&token=" in best.video_url  # the \u003d / \u0026 escapes decode to = and &
    assert best.preview_expires_at is None  # 2021 URLs carry no `now`


def test_raw_2023_episode_types_survive(samples: Path) -> None:
    answer = provider().parse_search(json_response(samples / "api-v1-search-raw-2023-01.json"))
    episodes = [hit.episode for hit in answer.hits]
    assert 26 in episodes
    assert None in episodes
    assert 16.5 in episodes
    assert "326|546" in episodes
    assert answer.hits[0].similarity == 0.96
    # V1 URLs with now=1673571600 are honoured until 300 s after it.
    assert {hit.preview_expires_at for hit in answer.hits} == {datetime.fromtimestamp(1673571600 + 300, UTC)}


def test_anilistinfo_excerpt_2023(samples: Path) -> None:
    (hit,) = (
        provider()
        .parse_search(json_response(samples / "api-v1-search-anilistinfo-excerpt-2023-12.json"))
        .hits
    )
    assert hit.anilist_id == 102882
    assert hit.mal_id == 37956
    assert hit.title is not None
    assert hit.title.romaji == "3D Kanojo: Real Girl 2"
    assert hit.title.native == "3D彼女 リアルガール 2"
    assert hit.title.english == "Real Girl 2"
    assert hit.title.chinese is None
    assert hit.episode == "5|17"
    assert hit.is_adult is False
    assert hit.synonyms == []
    assert hit.preview_expires_at == datetime.fromtimestamp(1701698400 + 300, UTC)


def test_milvus_era_2025(samples: Path) -> None:
    path = samples / "api-search-milvus-era-2025-09.json"
    answer = provider().parse_search(json_response(path))
    best = answer.hits[0]
    assert best.anilist_id == 2136
    assert best.episode is None
    assert (best.start_seconds, best.at_seconds, best.end_seconds) == (514.4473, 514.6808, 514.7476)
    assert best.episode_duration_seconds == 1668.2666
    assert best.video_url == "https://api.trace.moe/video/NfKMBIFuQDAeHpurcJPAMbR"
    assert best.image_url == "https://api.trace.moe/image/NfKMBIFuQDAeHpurcJPAMbR"
    assert all(0.5 < hit.similarity < 0.66 for hit in answer.hits)
    assert best.preview_expires_at is None  # a body without its response Date
    dated = provider().parse_search(json_response(path, {"date": "Mon, 15 Sep 2025 08:59:59 GMT"}))
    assert dated.hits[0].preview_expires_at == datetime(2025, 9, 15, 9, 5, tzinfo=UTC)
