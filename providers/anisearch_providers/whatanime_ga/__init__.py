"""The legacy whatanime.ga / trace.moe ``/api`` search: the ``whatanime-ga`` provider, sans-IO."""

from ._provider import DEFAULT_MAX_BODY_BYTES, WhatanimeGa, data_url

__all__ = ["DEFAULT_MAX_BODY_BYTES", "WhatanimeGa", "data_url"]
