"""A tiny SceneDB emulator (Starlette): one key, one scene, a daily allowance of 2 searches."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

KEY = "demo-key"


def create_app(allowance: int = 2) -> Starlette:
    """The app; ``allowance`` searches succeed, then every lookup answers 402."""
    left = [allowance]

    async def lookup(request: Request) -> JSONResponse:
        if request.headers.get("x-api-key") != KEY:
            return JSONResponse({"error": "unknown key"}, status_code=401)
        if left[0] <= 0:
            return JSONResponse({"error": "out of credits"}, status_code=402)
        async with request.form() as form:
            if "file" not in form:
                return JSONResponse({"error": "no file"}, status_code=400)
        left[0] -= 1
        match = {"anilist": 11887, "episode": 5, "at": 1169.5, "score": 0.97}
        return JSONResponse({"matches": [match], "credits_left": left[0]})

    return Starlette(routes=[Route("/v1/lookup", lookup, methods=["POST"])])
