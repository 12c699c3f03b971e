"""Reading a legacy search request: the body (with its size cap) and the ``image``/``filter`` fields."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

from starlette.datastructures import UploadFile
from starlette.requests import Request

__all__ = ["SearchInput", "anilist_filter", "parse_input", "read_body"]

_LEADING_INT: Final = re.compile(r"\s*[+-]?\d+")


@dataclass(slots=True)
class SearchInput:
    """What a search request carried: a base64 ``image`` field, an uploaded file, and ``filter``."""

    image: str | None = None
    file: bytes | None = None
    filter: Any = None


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is over ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_input(request: Request, body: bytes) -> SearchInput:
    """The ``image``/``filter`` fields from a form, a multipart upload or a JSON body (the JSON wins, as
    in the PHP server, which decoded any raw body that parsed as JSON)."""
    found = SearchInput()
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async with Request(request.scope, replay).form(max_part_size=len(body) + 1) as form:
            image = form.get("image")
            if isinstance(image, UploadFile):
                found.file = await image.read()
            elif isinstance(image, str):
                found.image = image
            found.filter = form.get("filter")
        return found
    if body:
        fields = dict(parse_qsl(body.decode("latin-1"), keep_blank_values=True))
        found.image, found.filter = fields.get("image"), fields.get("filter")
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict):
            found.image = data.get("image", found.image)
            found.filter = data.get("filter", found.filter)
    return found


def anilist_filter(value: Any) -> int | None:
    """PHP's ``intval($filter)`` when ``$filter`` is truthy: 0, ``""`` and junk mean no filter."""
    if isinstance(value, int | float):  # a JSON body's number (or boolean, as PHP would take it)
        return int(value) or None
    if isinstance(value, str) and (match := _LEADING_INT.match(value)) is not None:
        return int(match.group()) or None
    return None
