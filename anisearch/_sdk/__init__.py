"""The provider SDK's implementation; the public names are re-exported by :mod:`anisearch.provider`."""
