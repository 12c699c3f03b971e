"""File paths as settings name them: a leading ``~``, and ``sqlite:///path`` URLs (the ledger and the result
cache settings take them)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, unquote

from anisearch._exceptions import ConfigurationError

__all__ = ["expand_home", "sqlite_url_home", "sqlite_url_path"]


def expand_home(path: str, setting: str) -> str:
    """``path`` with a leading ``~`` or ``~user`` replaced by that home directory; any other path as is.

    A .env file, a systemd unit or a compose file hands ``~/...`` over as written: taken as is, it would be
    a folder named ``~`` in each working directory, so that processes started in two directories keep two
    ledgers and two caches.

    Args:
        path: The path as written.
        setting: What the user set, for messages (``"ANISEARCH_STATE_DIR"``).

    Raises:
        ConfigurationError: The home directory cannot be found (``~user`` names no user, or ``~`` with no
            ``HOME`` and no entry in the password database).
    """
    if not path.startswith("~"):
        return path
    try:
        return str(Path(path).expanduser())
    except RuntimeError:
        user = path.partition("/")[0]
        raise ConfigurationError(
            f"{setting}: {user} names no home directory (no such user, or no HOME); write the full path"
        ) from None


def sqlite_url_path(url: str, setting: str) -> str:
    """The file a ``sqlite:///relative`` or ``sqlite:////absolute`` URL names (a query is ignored);
    ``sqlite:///~/file.db`` names ``file.db`` in the home directory.

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
    path = expand_home(path, setting)
    _refuse_a_misread_path(url, path, setting)
    return path


def sqlite_url_home(url: str, setting: str) -> str:
    """``url`` with a leading ``~`` (or ``~user``) of its path spelt out: ``sqlite:///~/ledger.db`` becomes
    ``sqlite:////home/<user>/ledger.db``, so that it names the same file from every working directory and
    says which. Any other URL is returned as is.

    Raises:
        ConfigurationError: As :func:`expand_home`.
    """
    scheme, _, rest = url.partition("://")
    raw = rest.removeprefix("/")
    if not raw.startswith("~"):
        return url
    user, slash, tail = raw.partition("/")
    home = expand_home(unquote(user), setting)
    return f"{scheme}:///{quote(home)}{slash}{tail}"


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
