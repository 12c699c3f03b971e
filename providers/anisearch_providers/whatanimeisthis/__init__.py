"""whatanimeisthis.com: anime scene search by upload or URL, with rankings, recent searches, credits,
API keys and a better-auth session.

The emulator (``anisearch_providers.whatanimeisthis.emulator``) needs the ``emulator`` extra and is
imported only on demand.
"""

from ._provider import DEFAULT_URL, PERIODS, WhatAnimeIsThis

__all__ = ["DEFAULT_URL", "PERIODS", "WhatAnimeIsThis"]
