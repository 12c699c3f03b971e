"""The legacy whatanime.ga / trace.moe ``/api`` server's emulator (2018-10 to 2021-02); see :mod:`._app`."""

from ._app import BODY_LIMIT_2017, BODY_LIMIT_2019, DEFAULT_PORT, Allowance, LegacyEmulatorState, create_app

__all__ = [
    "BODY_LIMIT_2017",
    "BODY_LIMIT_2019",
    "DEFAULT_PORT",
    "Allowance",
    "LegacyEmulatorState",
    "create_app",
]
