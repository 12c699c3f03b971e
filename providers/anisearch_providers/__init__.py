"""The providers that ship with anisearch: trace.moe (current and legacy) and whatanimeisthis.com.

Each package holds everything about its upstream (URLs, field names, quota rules) and is
found by the core through the ``anisearch.providers`` entry-point group, never by import. The
emulators live apart, in ``anisearch_emulators``, which no runtime module imports (import-linter).
"""
