"""The release number (read by the build backend) and the distribution's name on the package index."""

__version__ = "0.1.0"

DISTRIBUTION = "anisearch-gateway"
"""``pip install anisearch-gateway``: the name ``anisearch`` on the package index is an unrelated project.
The import package and the command are ``anisearch``."""
