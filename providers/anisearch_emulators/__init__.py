"""Emulators of the upstreams anisearch talks to, for offline work and end-to-end tests.

One subpackage per upstream (``tracemoe``, ``whatanime_ga``, ``whatanimeisthis``, ``anilist``), each exposing
``create_app(**knobs)`` (a Starlette app, the ``emulator`` extra) and ``DEFAULT_PORT``; the core finds
them through the ``anisearch.emulators`` entry-point group (``anisearch emulate``). Every emulator
searches the same scenes, read from ``data/scenes.json`` (see ``data/README.md``).

The emulators may import the runtime providers (``anisearch_providers``) to share a parser or the
descriptor; the runtime providers never import an emulator.
"""
