"""``sqlite:///path`` URLs, as the ledger and the result cache settings take them."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from anisearch._exceptions import ConfigurationError

__all__ = ["sqlite_url_path"]


def sqlite_url_path(url: str, setting: str) -> str:
    """The file a ``sqlite:///relative`` or ``sqlite:////absolute`` URL names (a query is ignored).

    Args:
        url: The URL, scheme ``sqlite`` in any case.
        setting: What the user set, for messages (``"the ledger URL"``).

    Raises:
        ConfigurationError: The URL names no file, or a relative path surely meant as absolute (see
            :func:`_refuse_a_misread_path`).
    """
    path = unquote(url.partition("://")[2].removeprefix("/")).partition("?")[0]
    if not path:
        raise ConfigurationError(f"{setting} {url!r} names no file; use sqlite:///path/to/file.db")
    _refuse_a_misread_path(url, path, setting)
    return path


def _refuse_a_misread_path(url: str, path: str, setting: str) -> None:
    """Refuse ``sqlite:///tmp/ledger.db`` when it was surely meant as ``/tmp/ledger.db``: the relative path
    would create a directory here (``./tmp``) while the absolute one's directory exists. Two processes
    started in different directories would then keep two files (two ledgers spend the quota twice; two
    caches pay twice for the same picture). ``sqlite:///./tmp/ledger.db`` says the relative path is meant.

    Raises:
        ConfigurationError: The path reads both ways, as described.
    """
    relative = Path(path)
    if relative.is_absolute() or path.startswith(("./", "../")) or len(relative.parts) < 2:  # noqa: PLR2004
        return
    here = Path.cwd()
    if (here / relative.parts[0]).exists() or not (Path("/") / relative).parent.is_dir():
        return
    raise ConfigurationError(
        f"{setting} {url!r} names {path} relative to the current directory ({here}), where "
        f"{relative.parts[0]} does not exist, while /{relative.parent} does: write sqlite:////{path} for "
        f"/{path}, or sqlite:///./{path} for the relative path"
    )
