"""Whether a loopback port can be had, for the launchers and `aios up`."""

from __future__ import annotations

import socket


def port_is_free(host: str, port: int) -> bool:
    """Nothing listens on host:port. SO_REUSEADDR as the servers bind, so a
    port a stopped stack left in TIME_WAIT counts as free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
