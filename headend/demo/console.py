"""The demo's web console: ``headend web``'s application served in the demo's process on a free
127.0.0.1 port, with the desk and reporting logins, and an operator created for this run (holding
every role; its random password is printed once by the demo and never logged)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import uvicorn

from headend.config import WebConfig
from headend.operators import ROLES, hash_password
from headend.store import operators as operator_store
from headend.store.demo_logins import DESK_LOGIN, REPORT_LOGIN, ensure_console_logins
from headend.web.app import create_app

DEMO_OPERATOR = "1"


class _QuietServer(uvicorn.Server):
    """A server that leaves Ctrl-C to the demo (which stops it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _as_login(dsn: str, user: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"{user}@{host}", parts.path, parts.query, parts.fragment))


@dataclass
class DemoConsole:
    """The running console: its URL and the run's operator login."""

    url: str
    operator_id: str
    password: str
    server: uvicorn.Server
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, 10)


async def start_console(dsn: str) -> DemoConsole:
    """Create the logins and the run's operator (on the owner's ``dsn``), then serve the console."""
    password = secrets.token_urlsafe(12)
    conn = await asyncpg.connect(dsn)
    try:
        await ensure_console_logins(conn)
        await operator_store.add_operator(
            conn, DEMO_OPERATOR, "demo operator", list(ROLES), hash_password(password)
        )
    finally:
        await conn.close()
    app = create_app(WebConfig(pool_size=4), _as_login(dsn, DESK_LOGIN), _as_login(dsn, REPORT_LOGIN))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", proxy_headers=False, server_header=False, lifespan="on")
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.05)
    if task.done():
        task.result()  # raises why it did not start
        raise RuntimeError("the console stopped while starting")
    return DemoConsole(f"http://127.0.0.1:{port}/", DEMO_OPERATOR, password, server, task)
