"""The trace.moe emulator (the current ``api.trace.moe`` and its v1/v2 eras); see :mod:`._app`."""

from ._app import (
    DEFAULT_PORT,
    TIERS,
    EmulatedUser,
    EmulatorState,
    Era,
    InjectedFailure,
    LoggedSearch,
    create_app,
)

__all__ = [
    "DEFAULT_PORT",
    "TIERS",
    "EmulatedUser",
    "EmulatorState",
    "Era",
    "InjectedFailure",
    "LoggedSearch",
    "create_app",
]
