"""SceneDB, a made-up scene-search API, as an anisearch provider built on the SDK.

``POST /v1/lookup`` takes the image as multipart ``file`` and the key in ``X-Api-Key``, and answers
``{"matches": [{"anilist": 21, "episode": 5, "at": 1169.5, "score": 0.93}], "credits_left": 41}``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

import anisearch.provider as sdk

ERROR_RULES: tuple[sdk.ErrorRule[sdk.ErrorAnswer], ...] = (
    sdk.ErrorRule(sdk.QuotaExhaustedError, sdk.statuses(402)),  # "out of credits": wait for tomorrow's
    sdk.ErrorRule(sdk.RateLimitedError, sdk.statuses(429)),  # 30 requests a minute, with Retry-After
    sdk.ErrorRule(sdk.AuthenticationError, sdk.statuses(401, 403)),  # a missing or unknown X-Api-Key
    sdk.ErrorRule(sdk.BadRequestError, sdk.statuses(range(400, 500))),
    sdk.ErrorRule(sdk.ProviderServerError, sdk.statuses(range(500, 600))),
)
"""SceneDB's errors, first match wins."""


class SceneDB(sdk.BaseProvider):
    """SceneDB (entry point ``scenedb``): 50 searches a day per key, 30 requests a minute."""

    name: ClassVar[str] = "scenedb"
    default_url: ClassVar[str] = "https://api.scenedb.example"
    capabilities = sdk.Capabilities(upload=True)
    limits = sdk.UploadLimits(max_bytes=2_000_000, formats=frozenset({"image/jpeg"}))

    def windows(self) -> list[sdk.WindowSpec]:
        """A daily quota of searches and a per-minute rate of requests."""
        return [
            sdk.WindowSpec("day", calendar="day", limit=50),
            sdk.WindowSpec("minute", span_seconds=60, counts="requests", kind="rate", limit=30),
        ]

    def headers(self) -> dict[str, str]:
        """The SDK's headers (JSON, User-Agent) and the key."""
        return {**super().headers(), **({"X-Api-Key": self.key} if self.key else {})}

    def search_request(self, query: sdk.SearchQuery) -> httpx.Request:
        """``POST /v1/lookup`` with the image as multipart ``file``."""
        files = {"file": ("frame.jpg", query.image.data, query.image.mime_type)}
        return self.request("POST", "/v1/lookup", files=files)

    def parse_search(self, response: httpx.Response) -> sdk.ProviderAnswer:
        """Hits (most similar first) and the credits left.

        Raises:
            ProviderError: The subclass :data:`ERROR_RULES` gives the status (``retry_after`` in seconds).
            UpstreamResponseError: A 200 that is not a lookup answer.
        """
        if response.status_code != httpx.codes.OK:
            rule, answer = sdk.classify_error(ERROR_RULES, response)
            error = rule.error if rule is not None else sdk.UpstreamResponseError
            wait = sdk.retry_after_seconds(response.headers, self.now())
            raise error(answer.message, provider=self.name, status_code=answer.status, retry_after=wait)
        body = self.json(response, "/v1/lookup")
        if not isinstance(body, dict) or not isinstance(body.get("matches"), list):
            raise sdk.UpstreamResponseError("no 'matches' list", provider=self.name, status_code=200)
        hits = sorted((self._hit(item) for item in body["matches"]), key=lambda hit: -hit.similarity)
        left = sdk.as_count(body.get("credits_left"), "credits_left")
        quota = sdk.Quota(provider=self.name, scope=self.scope, remaining=left, window="day")
        return sdk.ProviderAnswer(hits=hits, quota=quota if left is not None else None)

    def _hit(self, item: Any) -> sdk.Hit:
        if not isinstance(item, dict) or (similarity := sdk.clamp_similarity(item.get("score"))) is None:
            raise sdk.UpstreamResponseError(f"not a match: {item!r:.80}", provider=self.name, status_code=200)
        return sdk.Hit(
            provider=self.name,
            anilist_id=sdk.as_int(item.get("anilist")),
            episode=sdk.as_episode(item.get("episode")),
            at_seconds=sdk.as_float(item.get("at")),
            similarity=similarity,
            raw=item,
        )
