"""How many examples each property test runs.

The README's test command (and CI) runs half of each test's full count, at least 50: its generated inputs
repeat their shapes well before the full count, and property tests were a sixth of the suite's CPU.
``HYPOTHESIS_PROFILE=thorough python -m pytest ...`` runs every test's full count (after changing a parser or
the image reader, or before a release). Either way a failure found once is replayed first (hypothesis'
example database), and hypothesis' own health checks stay on.
"""

from __future__ import annotations

import os

THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"


def examples(full: int) -> int:
    """The number of examples to run for a test whose full count is ``full``."""
    return full if THOROUGH else max(50, full // 2)
