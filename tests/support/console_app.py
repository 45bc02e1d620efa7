"""The web console in this process: the real application (``create_app``) on the test database's
desk and reporting logins, driven through Starlette's test client (no process, no port); for API
tests where the process boundary is not the point."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
