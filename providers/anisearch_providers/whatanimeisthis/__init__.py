"""whatanimeisthis.com: anime scene search by upload or URL, with rankings, recent searches, credits,
API keys and a better-auth session.

Its emulator lives apart, in ``anisearch_emulators.whatanimeisthis`` (the ``emulator`` extra), and is
imported only on demand.
"""

from ._provider import DEFAULT_URL, PERIODS, WhatAnimeIsThis

__all__ = ["DEFAULT_URL", "PERIODS", "WhatAnimeIsThis"]
