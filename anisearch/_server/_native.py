"""The native API: ``POST /v1/search``, ``GET /v1/quota``, ``GET /v1/providers``, ``/healthz``,
``/readyz`` and the OpenAPI document at ``/openapi.json``.

``POST /v1/search`` takes the image as a multipart ``image`` file, as the raw body (``image/*``,
``application/octet-stream``), or as JSON ``{"url": "https://..."}``; the options of
:meth:`anisearch.AsyncClient.search` are query parameters (``providers`` repeated or comma-separated,
``strategy``, ``anilist_id``, ``cut_borders``, ``anilist_info``, ``min_similarity``, ``cache``,
``deadline``, ``mode``). It answers a :class:`~anisearch.SearchResult` as JSON (hits without ``raw``), or
``{"error": {"type", "message", "errors", "attempts"}}``.
"""

from __future__ import annotations

import json
from datetime import datetime
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.datastructures import UploadFile
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from anisearch._cache_redis import cache_ready
from anisearch._exceptions import AnisearchError
from anisearch._models import ProviderInfo, Quota, SearchResult
from anisearch._server import _tracemoe
from anisearch._server._callers import Caller, Denied, Refused, identify
from anisearch._server._errors import native_error, retry_after_header
from anisearch._server._tracemoe import read_body as _read_body
from anisearch._version import __version__

if TYPE_CHECKING:
    from starlette.requests import Request

    from anisearch._server._app import Gateway

__all__ = ["NativeApi", "SearchParams", "openapi_document", "problem"]


class SearchParams(BaseModel):
    """The options of one native search (query parameters)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    providers: list[str] | None = None
    strategy: Literal["fallback", "fanout"] = "fallback"
    anilist_id: int | None = Field(default=None, gt=0, le=2**31 - 1)  # AniList's IDs: never sent past them
    cut_borders: bool = False
    anilist_info: bool = False
    min_similarity: float | None = Field(default=None, ge=0, le=1)
    cache: bool = True
    deadline: float | None = Field(default=None, gt=0)
    mode: Literal["image", "vector"] = "image"

    @field_validator("providers", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, list):
            names = [name.strip() for item in value for name in str(item).split(",") if name.strip()]
            return names or None
        return value


async def _form_image(request: Request, raw: bytes) -> bytes | str | Response:
    """The multipart ``image`` file (or a ``url`` field) of ``raw``, the body."""
    form = await _tracemoe.parse_form(request, raw, max_files=1, max_fields=16)
    if isinstance(form, str):
        return problem(400, "InvalidImageError", f"the multipart body does not parse: {form}")
    upload, url = form.get("image"), form.get("url")
    data = await upload.read() if isinstance(upload, UploadFile) else None
    await form.close()
    if data is not None:
        return data
    if isinstance(url, str) and url:
        return url
    return problem(400, "InvalidImageError", "send the image as the multipart field 'image'")


def _json_url(raw: bytes) -> str | Response:
    """``{"url": "..."}``."""
    try:
        document = json.loads(raw)
    except ValueError:
        return problem(400, "InvalidImageError", "the JSON body does not parse")
    if isinstance(document, dict) and isinstance(document.get("url"), str):
        return str(document["url"])
    return problem(400, "InvalidImageError", 'a JSON body is {"url": "https://..."}')


def _params(request: Request) -> SearchParams | Response:
    """The search options of the query string, or a 422."""
    query = request.query_params
    options: dict[str, Any] = {key: query.get(key) for key in query if key != "providers"}
    if "providers" in query:
        options["providers"] = query.getlist("providers")
    try:
        return SearchParams.model_validate(options)
    except ValidationError as exc:
        details = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        return problem(422, "ConfigurationError", "invalid search options", details=details)


def _refused(outcome: Refused, caller: Caller, now: datetime) -> Response:
    """The native answer for a caller's own allowance: 429 (slots) or 402 (quota) with Retry-After."""
    if outcome.kind == "concurrency":
        return problem(429, "ConcurrencyLimitError", f"more than {caller.concurrency} searches in flight")
    headers = {}
    if outcome.until is not None:
        headers["Retry-After"] = str(max(int((outcome.until - now).total_seconds()), 1))
    message = f"this client's quota is spent ({outcome.used} of {outcome.quota} searches in 24 h)"
    return problem(402, "QuotaExhaustedError", message, headers=headers)


def problem(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """The native API's error: ``{"error": {"type": kind, "message": message, ...extra}}`` with ``status``."""
    return JSONResponse({"error": {"type": kind, "message": message, **extra}}, status, headers)


class NativeApi:
    """The ``/v1`` routes of one gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def routes(self) -> list[Route]:
        return [
            Route("/v1/search", self.search, methods=["POST"]),
            Route("/v1/quota", self.quota, methods=["GET"]),
            Route("/v1/providers", self.providers, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET", "HEAD"]),
            Route("/readyz", self.readyz, methods=["GET", "HEAD"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
        ]

    def _caller(self, request: Request) -> Caller | Response:
        peer = request.client.host if request.client else None
        caller = identify(request.headers, peer, self.gateway.server, native=True)
        if isinstance(caller, Denied):
            challenge = {"WWW-Authenticate": 'Bearer realm="anisearch"'}
            headers = challenge if caller.status == int(HTTPStatus.UNAUTHORIZED) else None
            return problem(caller.status, "AuthenticationError", caller.message, headers)
        return caller

    async def _image(self, request: Request) -> bytes | str | Response:
        limit = self.gateway.server.max_body_bytes
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            with anyio.fail_after(self.gateway.server.deadline):
                raw = await _read_body(request, limit + 64 * 1024)
        except TimeoutError:
            return problem(408, "TimeoutError", "the request body did not arrive in time")
        if raw is None:
            return problem(413, "ImageTooLargeError", f"the body is larger than {limit} bytes")
        if media == "multipart/form-data":
            return await _form_image(request, raw)
        if media == "application/json":
            return _json_url(raw)
        if not raw:
            return problem(400, "InvalidImageError", "no image: send a file, the raw bytes or a URL")
        return raw

    async def search(self, request: Request) -> Response:
        """``POST /v1/search``: one search with every option of ``search()``."""
        caller = self._caller(request)
        if isinstance(caller, Response):
            return caller
        params = _params(request)
        if isinstance(params, Response):
            return params
        image = await self._image(request)
        if isinstance(image, Response):
            return image
        left = self.gateway.deadline_left(request)
        deadline = min(params.deadline or left, left)

        async def call(source: Any) -> SearchResult:
            return await self.gateway.client.search(
                source,
                providers=params.providers,
                strategy=params.strategy,
                anilist_id=params.anilist_id,
                cut_borders=params.cut_borders,
                anilist_info=params.anilist_info,
                min_similarity=params.min_similarity,
                cache=params.cache,
                deadline=deadline,
                mode=params.mode,
            )

        outcome, _used = await self.gateway.run_search(caller, image, call)
        if isinstance(outcome, Refused):
            return _refused(outcome, caller, self.gateway.gate.ledger.now())
        if isinstance(outcome, AnisearchError):
            status, body = native_error(outcome)
            headers = _tracemoe.attempt_headers(None, list(getattr(outcome, "attempts", ())))
            return JSONResponse(body, status, {**headers, **retry_after_header(outcome)})
        body = outcome.model_dump(mode="json", exclude={"hits": {"__all__": {"raw"}}, "quota": {"raw"}})
        return JSONResponse(body, headers=_tracemoe.attempt_headers(outcome, outcome.attempts))

    async def quota(self, request: Request) -> Response:
        """``GET /v1/quota``: the caller's own allowance and what each provider has left."""
        caller = self._caller(request)
        if isinstance(caller, Response):
            return caller
        try:
            used = await self.gateway.gate.used(caller)
            quotas = await self.gateway.client.quota()
        except AnisearchError as exc:  # the ledger cannot be used (Redis down)
            status, body = native_error(exc)
            return JSONResponse(body, status)
        return JSONResponse(
            {
                "client": {
                    "name": caller.name,
                    "quota": caller.quota,
                    "used": used,
                    "remaining": max(caller.quota - used, 0),
                    "concurrency": caller.concurrency,
                    "window": "rolling-24h",
                },
                "providers": [q.model_dump(mode="json", exclude={"raw"}) for q in quotas],
            }
        )

    async def providers(self, request: Request) -> Response:
        """``GET /v1/providers``: every registered provider (base URLs without passwords)."""
        caller = self._caller(request)
        if isinstance(caller, Response):
            return caller
        try:
            infos = await self.gateway.client.providers()
        except AnisearchError as exc:  # a provider's settings the gateway was started with are wrong
            status, body = native_error(exc)
            return JSONResponse(body, status)
        return JSONResponse([info.model_dump(mode="json") for info in infos])

    async def healthz(self, _request: Request) -> Response:
        """``GET /healthz``: the process answers."""
        return JSONResponse({"status": "ok"})

    async def readyz(self, _request: Request) -> Response:
        """``GET /readyz``: the ledger and the result cache answer (503 otherwise)."""
        checks: dict[str, str] = {}
        try:
            with anyio.fail_after(5):
                await self.gateway.gate.ledger.snapshot("gateway")
            checks["ledger"] = "ok"
        except Exception as exc:  # noqa: BLE001 - readiness reports whatever failed, by class
            checks["ledger"] = "LedgerError" if not isinstance(exc, TimeoutError) else "TimeoutError"

        try:
            with anyio.fail_after(5):
                checks["cache"] = "ok" if await cache_ready(self.gateway.settings) else "unusable"
        except Exception as exc:  # noqa: BLE001 - readiness reports whatever failed, by class
            checks["cache"] = type(exc).__name__
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse({"status": "ready" if ready else "unready", **checks}, 200 if ready else 503)

    async def openapi(self, _request: Request) -> Response:
        """``GET /openapi.json``."""
        return JSONResponse(openapi_document())


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the gateway's API (models from pydantic's JSON schemas)."""
    schemas: dict[str, Any] = {}
    for model in (SearchResult, Quota, ProviderInfo):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    error = {"description": "An error", "content": {"application/json": {"schema": _ref("Error")}}}
    schemas["Error"] = {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
                "required": ["type", "message"],
            }
        },
    }
    params = [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in SearchParams.model_json_schema()["properties"].items()
    ]
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    image_body = {
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}}}
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {
                "schema": {"type": "object", "properties": {"url": {"type": "string", "format": "uri"}}}
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "anisearch gateway", "version": __version__},
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "traceKey": {"type": "apiKey", "in": "header", "name": "x-trace-key"},
            },
        },
        "paths": {
            "/v1/search": {
                "post": {
                    "summary": "Which anime, which episode, which second",
                    "security": bearer,
                    "parameters": params,
                    "requestBody": image_body,
                    "responses": {
                        "200": {
                            "description": "The answer",
                            "content": {"application/json": {"schema": _ref("SearchResult")}},
                        },
                        **dict.fromkeys(
                            ("400", "401", "402", "403", "413", "422", "429", "502", "503"), error
                        ),
                    },
                }
            },
            "/v1/quota": {
                "get": {
                    "summary": "The caller's allowance and each provider's quota",
                    "security": bearer,
                    "responses": {"200": {"description": "Quotas"}, "401": error},
                }
            },
            "/v1/providers": {
                "get": {
                    "summary": "Registered providers",
                    "security": bearer,
                    "responses": {
                        "200": {
                            "description": "Providers",
                            "content": {
                                "application/json": {
                                    "schema": {"type": "array", "items": _ref("ProviderInfo")}
                                }
                            },
                        },
                        "401": error,
                    },
                }
            },
            "/search": {
                "post": {
                    "summary": "trace.moe-compatible search (any method)",
                    "security": [{"traceKey": []}],
                    "responses": {"200": {"description": "trace.moe's search body"}},
                }
            },
            "/me": {"get": {"summary": "trace.moe-compatible: the caller's allowance", "responses": {}}},
            "/healthz": {"get": {"summary": "Alive", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {
                "get": {
                    "summary": "Ledger and cache reachable",
                    "responses": {"200": {"description": "ready"}, "503": {"description": "unready"}},
                }
            },
            "/metrics": {
                "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}
            },
        },
    }
