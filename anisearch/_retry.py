"""stamina, imported only when a retry is first needed.

stamina logs each retry it schedules as a warning (logger ``stamina``). A program that configured no logging
would get those lines on stderr from logging's last resort, unasked: a ``NullHandler`` keeps them out of it,
as a library's own logger does. A program that configured logging still gets them through its handlers, and
``anisearch -v`` shows them.
"""

from __future__ import annotations

import logging
from types import ModuleType

__all__ = ["stamina"]


def stamina() -> ModuleType:
    """The ``stamina`` module, its logger quiet unless the program configured logging."""
    import stamina as module

    logger = logging.getLogger("stamina")
    if not any(isinstance(handler, logging.NullHandler) for handler in logger.handlers):
        logger.addHandler(logging.NullHandler())
    return module
