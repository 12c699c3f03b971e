"""The suite's promise: no test can reach anything but loopback."""

from __future__ import annotations

import socket

import pytest
from pytest_socket import SocketConnectBlockedError


def test_connections_beyond_loopback_are_refused_before_any_packet() -> None:
    # pytest-socket checks the host before resolving it, so nothing leaves this machine; it also warns.
    with (
        pytest.raises(SocketConnectBlockedError),
        pytest.warns(UserWarning, match="api.trace.moe"),
        socket.socket() as sock,
    ):
        sock.connect(("api.trace.moe", 443))


def test_loopback_stays_open() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=2):
            pass
