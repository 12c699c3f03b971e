"""Standard input, output and error that the ``anisearch`` command was started without.

A shell's ``<&-`` or ``2>&-`` starts the command with that file descriptor closed, or, behind a wrapper
script (pyenv's shims), open on a file it cannot write. Left so, a write to stderr fails (a matched search
exited 1, a batch printed nothing), and the first file or socket opened afterwards takes the free number:
a stray write meant for stderr would land in it. :func:`open_std_streams` opens each such descriptor on the
null device before anything else runs: what is written there is lost, the exit code stays true. A missing
standard input is remembered, so that ``search -`` can say it has nothing to read (:func:`stdin_closed`).
"""

import os
import sys

__all__ = ["open_std_streams", "stdin_closed"]

_STREAMS = (
    (0, "stdin", os.O_RDONLY),
    (1, "stdout", os.O_WRONLY),
    (2, "stderr", os.O_WRONLY),
)
"""Each standard stream: its file descriptor, its name in :mod:`sys`, and the access it needs."""

_missing: set[int] = set()
"""The descriptors :func:`open_std_streams` found closed or unusable (0, 1, 2)."""


def _usable(fd: int, access: int) -> bool:
    """Whether ``fd`` is open for ``access`` (``os.O_RDONLY`` or ``os.O_WRONLY``; read-write serves both)."""
    try:
        import fcntl
    except ImportError:  # Windows: a closed standard stream is None in sys, and is left so
        return True
    try:
        mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    except OSError:  # EBADF: closed
        return False
    return mode in (access, os.O_RDWR)


def open_std_streams() -> None:
    """Open each standard stream that is closed, or open without the access it needs, on the null device,
    and give :mod:`sys` a stream for it where it has None (Python's mark of a stream closed at start).

    Idempotent; a descriptor that cannot be replaced is left as it is. Raises nothing.
    """
    for fd, name, access in _STREAMS:
        if _usable(fd, access):
            continue
        try:
            null = os.open(os.devnull, access)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        except OSError:
            continue
        _missing.add(fd)
        if getattr(sys, name) is None:
            mode = "r" if access == os.O_RDONLY else "w"
            stream = open(fd, mode, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115 - open for the process's life
            setattr(sys, name, stream)


def stdin_closed() -> bool:
    """Whether the command was started without a standard input (``<&-``): what it reads now is the null
    device's nothing. Also True where :func:`open_std_streams` was not run and :mod:`sys` has none."""
    return 0 in _missing or sys.stdin is None
