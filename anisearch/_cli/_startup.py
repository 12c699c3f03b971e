"""Start-up of the ``anisearch`` command: httpx and httpcore imported without what they never need here.

httpx and httpcore import some optional packages whenever they are installed, for features a command
never uses. Measured in one command's start-up on 2 cores: trio 140 ms (selenium brings it), h2 29 ms, and
click 32 ms with the rich and pygments modules httpx's own command loads (uvicorn, in the ``emulator`` and
``server`` extras, brings click). While httpx and httpcore are imported, these look uninstalled to them;
anything imported later (uvicorn importing click, a provider importing trio) finds them as usual.

Only the command does this: a program importing :mod:`anisearch` may run httpx under trio or over HTTP/2.
"""

import importlib.abc
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

__all__ = ["HIDDEN", "hide_unused_imports"]

HIDDEN = ("trio", "h2", "click")
"""What httpx and httpcore import when installed and a command never uses: trio (httpcore's locks and
network backend under trio; every command runs on asyncio), h2 (HTTP/2; anisearch speaks HTTP/1.1) and
click (httpx's own ``httpx`` command). SOCKS support (socksio) stays: a user's ``ALL_PROXY`` may need it."""

_IMPORTED_WITHOUT = frozenset({"httpx", "httpcore"})


class _Loader(importlib.abc.Loader):
    """Runs ``loader``'s module with :data:`HIDDEN` marked missing in ``sys.modules`` (``import trio``
    then raises ``ModuleNotFoundError``, as when it is not installed), unmarking them afterwards."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def __getattr__(self, name: str) -> Any:  # get_source, is_package, resource readers: the real loader's
        return getattr(self._loader, name)

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        hidden = [name for name in HIDDEN if name not in sys.modules]
        for name in hidden:
            sys.modules[name] = None  # type: ignore[assignment]  # Python's own "not importable" mark
        try:
            self._loader.exec_module(module)
        finally:
            for name in hidden:
                if name in sys.modules and sys.modules[name] is None:
                    del sys.modules[name]


class _Finder(importlib.abc.MetaPathFinder):
    """Finds httpx and httpcore as the other finders do, giving them a :class:`_Loader`."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in _IMPORTED_WITHOUT:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec: ModuleSpec | None = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _Loader(spec.loader)
                return spec
        return None


def hide_unused_imports() -> None:
    """Import httpx and httpcore, when the command first needs them, without :data:`HIDDEN`.

    Idempotent; nothing happens to a module already imported.
    """
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
