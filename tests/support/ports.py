"""TCP ports for processes a test starts: reserved by binding, never probed.

``free_port()`` binds a socket to 127.0.0.1:0 with ``SO_REUSEADDR`` and keeps it bound (not
listening) for the rest of the test process. No other process can be given that port (the kernel
skips bound ports when it picks one for port 0, and a plain bind is refused), while the server the
test starts on it (asyncio, ``http.server``: both set ``SO_REUSEADDR``) can bind and listen. There
is no gap between choosing the port and holding it.
"""

from __future__ import annotations

import socket

_held: list[socket.socket] = []


def free_port() -> int:
    """A port on 127.0.0.1 held for this test process, for a server that binds with SO_REUSEADDR."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    _held.append(sock)
    port: int = sock.getsockname()[1]
    return port
