"""How many examples each property test runs.

The README's test command (and CI) runs half of each test's full count, at least 50: its generated inputs
repeat their shapes well before the full count, and property tests were a sixth of the suite's CPU.
``HYPOTHESIS_PROFILE=thorough python -m pytest ...`` runs every test's full count (after changing a parser or
the image reader, or before a release). Either way hypothesis' own health checks stay on, and a failure
found once is replayed first (its example database), except by the parser fuzz tests, which keep none.
"""

from __future__ import annotations

import os

THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"


def examples(full: int) -> int:
    """The number of examples to run for a test whose full count is ``full``."""
    return full if THOROUGH else max(50, full // 2)
