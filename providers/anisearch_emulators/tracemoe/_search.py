"""The trace.moe emulator's ``/search``: body parsing, the checks in upstream order, input, scoring.

Private to :mod:`anisearch_emulators.tracemoe`, which documents the behaviour.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import json
import math
import operator
import re
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import anyio
import anyio.lowlevel
import anyio.to_thread
import httpx
from PIL import Image
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from anisearch_providers.tracemoe.descriptor import DESCRIPTOR_LENGTH, color_layout, prepare_search_image

from ._index import ANILIST
from ._state import HTML_TYPE, LoggedSearch, Server, _Caller, _error, _express_page, _json

if TYPE_CHECKING:
    from collections.abc import Sequence

    from starlette.requests import Request

    from ._index import IndexedScene

RAW_TYPES = re.compile(
    r"^(application/octet-stream|application/x-www-form-urlencoded|image/[^;]+|video/[^;]+)$"
)
MAX_BATCH = 10
HTTP_ERROR = 400


TIMER_SLACK_SECONDS = 0.0015
"""How late an event loop's timer can fire: asyncio waits in whole milliseconds, rounded up."""


async def answer_at(deadline: float) -> None:
    """Return at ``deadline`` (``anyio.current_time()``), give or take a tenth of a millisecond.

    ``anyio.sleep`` alone returns about a millisecond late on average, which made a 50 ms upstream a
    51-52 ms one; so the search sleeps until just before and yields to the event loop for the rest.
    """
    if (left := deadline - anyio.current_time()) > TIMER_SLACK_SECONDS:
        await anyio.sleep(left - TIMER_SLACK_SECONDS)
    while anyio.current_time() < deadline:
        await anyio.lowlevel.checkpoint()


def _truthy(value: Any) -> bool:
    """JavaScript truthiness of a decoded JSON value."""
    return not (
        value is None
        or value is False
        or value in (0, "")
        or (isinstance(value, float) and math.isnan(value))
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _single_vector(item: Any) -> list[float] | None:
    if isinstance(item, str):
        cleaned = re.sub(r"[^A-Za-z0-9+/]", "", item.replace("-", "+").replace("_", "/"))
        try:
            data = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))
        except binascii.Error:
            return None
        return [float(b) for b in data] if len(data) == DESCRIPTOR_LENGTH else None
    if isinstance(item, list) and len(item) == DESCRIPTOR_LENGTH and all(_is_number(n) for n in item):
        return [float(n) for n in item]
    return None


def _parse_vectors(value: Any) -> tuple[list[list[float]], bool] | str:
    """``{"vector": ...}`` -> (vectors, is_batch), or the 400 message (§2.4)."""
    if isinstance(value, list) and value and not all(_is_number(n) for n in value):
        if len(value) > 10:  # noqa: PLR2004 - the server's batch limit
            return "Too many vectors (max 10)"
        parsed = [_single_vector(item) for item in value]
        return "Invalid vector format" if None in parsed else ([v for v in parsed if v is not None], True)
    single = _single_vector(value) if isinstance(value, str | list) else None
    return "Invalid vector format" if single is None else ([single], False)


def _sharp(data: bytes) -> Image.Image | None:
    """The primary decoder (sharp/libvips upstream): a complete image, or None."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.copy()
    except Exception:  # noqa: BLE001 - any refusal hands the bytes to the fallback, as upstream
        return None


def _ffmpeg_first_frame(data: bytes) -> Image.Image | None:
    """The fallback (ffmpeg's first frame upstream): what is left of a truncated image, or the first
    frame of a video (PyAV, the ``video`` extra); None when it cannot decode either."""
    if data.startswith(b"\xff\xd8"):  # a JPEG cut short: decode what arrived (the rest stays grey)
        repaired = _sharp(data + b"\xff\xd9")
        if repaired is not None:
            return repaired
    try:
        import av  # the optional "video" extra
    except ImportError:  # pragma: no cover - the dev install has it
        return None
    try:
        container: Any = av.open(io.BytesIO(data), mode="r")  # PyAV's types are partial
        with container:
            if not container.streams.video:
                return None
            frame = next(iter(container.decode(container.streams.video[0])), None)
            image: Image.Image | None = None if frame is None else frame.to_image()
            return image
    except Exception:  # noqa: BLE001 - ffmpeg refuses it too: "Failed to process image"
        return None


def _describe(data: bytes, cut_borders: bool) -> tuple[int, ...] | None:
    """The upload's descriptor, decoded as the server does: sharp first, ffmpeg's first frame when sharp
    refuses (a truncated JPEG, a video); None when both fail."""
    image = _sharp(data) or _ffmpeg_first_frame(data)
    if image is None:
        return None
    try:
        return color_layout(prepare_search_image(image, cut_borders=cut_borders))
    except Exception:  # noqa: BLE001 - a frame that cannot be prepared is "Failed to process image"
        return None


def _valid_url(url: str) -> bool:
    """Roughly WHATWG ``new URL()``: a scheme, and a host for the special schemes."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", parts.scheme or "-"):
        return False
    return bool(parts.hostname) or parts.scheme.lower() not in {"http", "https", "ws", "wss", "ftp"}


class _Crash(Exception):  # noqa: N818 - an uncaught exception in the upstream handler
    """The upstream handler throws (Express answers its 500 HTML page)."""


@dataclass(frozen=True, slots=True)
class _Body:
    raw: bytes = b""
    json: Any = None
    file: bytes | None = None


def _js_number(text: str) -> bool:
    try:
        return bool(float(text))
    except ValueError:
        return False


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _FailedFetch(Response):
    """A ``?url=`` image the host refused: answered with the host's status, logged as 400 (as upstream)."""

    def __init__(self, status: int, message: str) -> None:
        answer = _error(status, message)
        super().__init__(answer.body, status, headers=dict(answer.headers))


class SearchRoutes(Server):
    """``/search``, in the upstream handler's order of checks."""

    def injected(self) -> Response:
        """The next answer queued by :meth:`EmulatorState.fail_next` (logged, never a success)."""
        failure = self.state.failures.popleft()
        self.state.log.append(LoggedSearch(self.state.clock(), "injected", failure.status))
        if isinstance(failure.body, str):
            media = failure.content_type or HTML_TYPE
            return Response(failure.body, failure.status, headers=dict(failure.headers), media_type=media)
        answer = _json(dict(failure.body), failure.status, dict(failure.headers))
        if failure.content_type:
            answer.headers["content-type"] = failure.content_type
        return answer

    async def search(self, request: Request) -> Response:  # noqa: PLR0911 - one exit per check, in upstream order
        if self.state.failures:
            return self.injected()
        arrived = anyio.current_time()  # `latency` is the whole answer time, from the request's arrival
        try:
            parsed = await self.read_body(request)
        except ClientDisconnect:  # the caller went away mid-upload: Express drops it, counting nothing
            return Response(status_code=400)  # to nobody: the connection is gone
        if isinstance(parsed, Response):
            return parsed
        if self.state.outage == "postgres":  # the first query throws, before any counter moves
            return _express_page(500, "Internal Server Error")
        caller = self.caller(request, self.api_key(request))
        if caller is None:
            return _error(403, "Invalid API key")
        state, now = self.state, self.state.clock()
        used = self.quota_used(caller, now)
        state.concurrent[caller.concurrency_id] = state.concurrent.get(caller.concurrency_id, 0) + 1
        state.queue[caller.priority] = state.queue.get(caller.priority, 0) + 1
        try:
            response, successes = await self.run_search(request, caller, used, parsed, arrived)
        except _Crash:  # the server's counters leak until the 15-minute housekeeping
            return _express_page(500, "Internal Server Error")
        except BaseException:
            self.dequeue(caller)
            raise
        code = HTTP_ERROR if isinstance(response, _FailedFetch) else response.status_code
        for _ in range(successes or 1):
            state.log.append(LoggedSearch(state.clock(), caller.scope, code, caller.network))
        # The server answers, then counts the search down once its log row is written
        # (`logAndDequeue` is not awaited before `res.json`): a moment after the answer left.
        response.background = BackgroundTask(self.dequeue_after_logging, caller)
        return response

    async def dequeue_after_logging(self, caller: _Caller) -> None:
        if self.config.log_seconds:
            await anyio.sleep(self.config.log_seconds)
        self.dequeue(caller)

    def dequeue(self, caller: _Caller) -> None:
        concurrent = self.state.concurrent.get(caller.concurrency_id, 0)
        if concurrent <= 1:
            self.state.concurrent.pop(caller.concurrency_id, None)
        else:
            self.state.concurrent[caller.concurrency_id] = concurrent - 1
        self.state.queue[caller.priority] = (self.state.queue.get(caller.priority) or 1) - 1

    async def read_body(self, request: Request) -> _Body | Response:  # noqa: PLR0911 - one exit per parser outcome
        """Express's body parsers and multer, which run before the search handler."""
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media == "multipart/form-data":
            return await self.read_multipart(request)
        is_json = media == "application/json" or media.endswith("+json")
        if not (is_json or RAW_TYPES.match(media)):
            return _Body()
        limit = self.config.max_json_bytes if is_json else self.config.max_upload_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return _express_page(413, "Payload Too Large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return _express_page(413, "Payload Too Large")
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not is_json or not raw:
            return _Body(raw=raw, json={} if is_json else None)
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return _express_page(400, "Bad Request")
        if not isinstance(document, dict | list):  # body-parser's strict mode
            return _express_page(400, "Bad Request")
        return _Body(raw=raw, json=document)

    async def read_multipart(self, request: Request) -> _Body | Response:
        try:
            form = await request.form(max_files=1000, max_fields=1000)
        except (HTTPException, ValueError):
            return _express_page(500, "Internal Server Error")
        files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        too_many = self.era == "v3" and len(files) > 1
        if too_many or any((upload.size or 0) > self.config.max_upload_bytes for upload in files):
            await form.close()
            return _express_page(500, "Internal Server Error")
        data = await files[0].read() if files else None
        await form.close()
        return _Body(file=data)

    async def run_search(  # noqa: PLR0911 - one exit per upstream check, in upstream order
        self, request: Request, caller: _Caller, used: int, body: _Body, arrived: float
    ) -> tuple[Response, int]:
        """The search handler after its counters went up: (response, successes to log)."""
        state, config = self.state, self.config
        if used >= caller.quota:
            if self.era == "v3":
                message = f"Search quota depleted (quota per 24 hours: {caller.quota}, used: {used})"
                return _json({"quota": caller.quota, "quotaUsed": used, "error": message}, 402), 0
            return _error(402, "Search quota depleted"), 0
        if state.concurrent[caller.concurrency_id] > caller.concurrency:
            return _error(402, "Concurrency limit exceeded"), 0
        if sum(n for priority, n in state.queue.items() if priority >= caller.priority) > config.queue_size:
            return _error(503, "Error: Search queue is full"), 0
        vectors = await self.input_vectors(request, body)
        if isinstance(vectors, Response):
            return vectors, 0
        vector_list, batch = vectors
        scenes = self.filtered_scenes(request)
        if scenes is None:  # an anilistID without indexed files: a counted success, without quota
            return _json({"frameCount": 0, "error": "", "result": []}), 1
        lists = [self.rank(vector, scenes, request) for vector in vector_list]
        body_out: dict[str, Any] = {"quota": caller.quota, "quotaUsed": used} if self.era == "v3" else {}
        body_out |= {
            "frameCount": sum(scene.frames for scene in scenes),
            "error": "",
            "result": lists if batch else lists[0],
        }
        answer = _json(body_out)
        if config.latency:  # the answer takes `latency` in all: reading, image work, ranking and encoding
            await answer_at(arrived + config.latency)
        if state.outage == "vector":
            return _error(500, "Search failed. Database temporarily unavailable."), 0
        return answer, len(vector_list)

    def filtered_scenes(self, request: Request) -> list[IndexedScene] | None:
        """The scenes ``anilistID`` allows (all when it is absent or not digits), None when it names an
        anime without indexed files.

        Raises:
            _Crash: The parameter is repeated (V2 and later): upstream calls ``.match()`` on an array and
                throws. V1 passed ``Number(array)``, NaN, and so searched without the filter.
        """
        scenes = list(self.config.index)
        wanted = request.query_params.getlist("anilistID")
        if len(wanted) > 1:
            if self.era != "v1":
                raise _Crash
            wanted = []
        if wanted and (re.fullmatch(r"\d+", wanted[0]) if self.era != "v1" else _js_number(wanted[0])):
            scenes = [scene for scene in scenes if scene.anilist_id == int(float(wanted[0]))]
            return scenes or None
        return scenes

    async def input_vectors(self, request: Request, body: _Body) -> tuple[list[list[float]], bool] | Response:
        """§2.1: vector, ``?url=``, the first uploaded file, the raw body; else 405."""
        document = body.json
        if self.era == "v3" and isinstance(document, dict) and _truthy(document.get("vector")):
            parsed = _parse_vectors(document["vector"])
            return _error(400, parsed) if isinstance(parsed, str) else parsed
        url = request.query_params.get("url", "")
        if url:
            fetched = await self.fetch(url)
            if isinstance(fetched, Response):
                return fetched
            data = fetched
        elif body.file is not None:
            data = body.file
        elif body.raw:
            data = body.raw
        else:
            return _error(405, "Method Not Allowed")
        if not url:
            self.state.upload_sizes.append(len(data))
        if not data:
            return _error(400, "Failed to process file" if self.era == "v3" else "Failed to process image")
        cut_borders = "cutBorders" in request.query_params
        descriptor = await anyio.to_thread.run_sync(_describe, data, cut_borders)
        if descriptor is None:
            return _error(400, "Failed to process image")
        return [[float(n) for n in descriptor]], False

    async def fetch(self, url: str) -> bytes | Response:  # noqa: PLR0911 - one exit per fetch outcome
        if not _valid_url(url):
            return _error(400, f"Invalid image url {url}")
        failed = f"Failed to fetch image {url}"
        known = self.config.remote_images.get(url)
        if isinstance(known, int):
            return _FailedFetch(max(known, HTTP_ERROR), failed)
        if known is not None:
            return known
        host = urlsplit(url).hostname or ""
        if not (self.config.fetch_loopback and _is_loopback(host)):
            return _error(400, failed)  # the server refuses private targets; the emulator has no internet
        try:
            async with httpx.AsyncClient(follow_redirects=True, max_redirects=5, timeout=10) as client:
                answer = await client.get(url)
        except httpx.HTTPError:
            return _error(400, failed)
        if answer.status_code >= 400:  # noqa: PLR2004
            return _FailedFetch(answer.status_code, failed)
        return answer.content

    def rank(self, vector: Sequence[float], scenes: Sequence[IndexedScene], request: Request) -> list[Any]:
        # squared distances, summed in order as before, but in C (map): no Python step per component
        scores = [sum(map(pow, map(operator.sub, vector, scene.vector), repeat(2))) for scene in scenes]
        scored = sorted(zip(scores, range(len(scenes)), scenes, strict=True))[:10]
        info = "anilistInfo" in request.query_params
        base = f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"
        return [self.item(scene, score, base, info) for score, _, scene in scored]

    def item(self, scene: IndexedScene, score: float, base: str, info: bool) -> dict[str, Any]:
        now = self.state.clock()
        record = ANILIST.get(scene.anilist_id)
        item: dict[str, Any] = {"anilist": scene.anilist_id}
        if info and self.era == "v1":
            if record is None:
                item = {}  # V1 dropped the key when AniList did not know the ID (bug #457)
            else:
                title = {k: record["title"].get(k) for k in ("native", "romaji", "english")}
                fields = {"id": record["id"], "idMal": record.get("idMal"), "title": title}
                item["anilist"] = fields | {
                    "synonyms": record.get("synonyms", []),
                    "isAdult": record.get("isAdult"),
                }
        elif info and record is not None:
            item["anilist"] = record
        item |= {"filename": scene.filename, "episode": scene.episode}
        if self.era == "v3":
            item |= {"episode_start": scene.episode_start, "episode_end": scene.episode_end}
        item["from"] = round(scene.start, 4)
        if self.era != "v1":
            item["at"] = round(scene.at, 4)
        item["to"] = round(scene.end, 4)
        if self.era != "v1":
            item["duration"] = scene.duration
        item["similarity"] = min(max(0.0, (255 - score) / 255), 1.0)
        if self.era == "v1":
            hour = int(now // 3600) * 3600 + 3600  # V1's `now`: the next full hour, good 300 s past it
            token = self.sign(f"{scene.anilist_id}/{scene.filename}/{scene.at}/{hour}")
            name = quote(scene.filename)
            query = f"?t={scene.at}&now={hour}&token={token}"
            item["video"] = f"{base}/video/{scene.anilist_id}/{name}{query}"
            item["image"] = f"{base}/image/{scene.anilist_id}/{name}.jpg{query}"
        else:
            preview = self.preview_id(scene, now)
            item |= {"video": f"{base}/video/{preview}", "image": f"{base}/image/{preview}"}
        return item
