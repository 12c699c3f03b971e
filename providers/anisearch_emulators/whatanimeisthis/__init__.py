"""The whatanimeisthis.com emulator (site routes and better-auth's); see :mod:`._app`."""

from ._app import DEFAULT_PORT, EmulatorState, Knobs, create_app

__all__ = ["DEFAULT_PORT", "EmulatorState", "Knobs", "create_app"]
