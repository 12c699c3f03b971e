"""The ``anisearch`` command (console script ``anisearch.cli:main``); its commands live in ``_cli``."""

from typing import TYPE_CHECKING, Any

from anisearch._cli import main

if TYPE_CHECKING:
    import typer

    app: typer.Typer

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    """``app``, the whole command line, is built on first use: ``main`` builds only the command it runs."""
    if name == "app":
        from anisearch import _cli

        return _cli.app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
