"""The ``anisearch`` command (console script ``anisearch.cli:main``); its commands live in ``_cli``."""

from anisearch._cli import app, main

__all__ = ["app", "main"]
