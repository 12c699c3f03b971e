"""``python -m anisearch`` runs the ``anisearch`` command."""

from anisearch.cli import main

main()
