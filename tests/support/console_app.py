"""The web console in this process: the real application (``create_app``) on the test database's
desk and reporting logins, driven through Starlette's test client (no process, no port); for API
tests where the process boundary is not the point."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import httpx
from fastapi.testclient import TestClient

from headend.config import WebConfig
from headend.web.app import create_app
from tests.support.logins import desk_dsn, report_dsn


@contextmanager
def console_in_process(pg_dsn: str) -> Iterator[TestClient]:
    """A client of the console serving ``pg_dsn``'s database; its pools close after the block."""
    app = create_app(WebConfig(pool_size=2), desk_dsn(pg_dsn), report_dsn(pg_dsn))
    with TestClient(app, base_url="http://127.0.0.1", follow_redirects=False) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    """The header of a request signed with ``token``."""
    return {"authorization": f"Bearer {token}"}


@asynccontextmanager
async def console_in_loop(pg_dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    """The same, on the test's own event loop (beside an engine the test drives)."""
    app = create_app(WebConfig(pool_size=2), desk_dsn(pg_dsn), report_dsn(pg_dsn))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield client
