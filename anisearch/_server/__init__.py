"""``anisearch serve``: a trace.moe-compatible gateway with quota-aware fallback, for bot fleets.

Needs the ``server`` extra (``pip install 'anisearch-gateway[server]'``: Starlette, uvicorn,
python-multipart, prometheus-client). :func:`create_app` builds the ASGI app; the command runs it under
uvicorn.
"""

from __future__ import annotations

from anisearch._server._app import Gateway, create_app
from anisearch._server._settings import ClientSpec, ServerSettings

__all__ = ["ClientSpec", "Gateway", "ServerSettings", "create_app"]
