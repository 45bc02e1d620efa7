"""Per-request dependencies: the signed-in operator on a bound desk connection, and a reporting
connection for reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends, Request

from headend.web.app import Console, console_of
from headend.web.identity import SESSION_COOKIE, Forbidden, Principal, resolve, unbound_after

SCOPED_PREFIX = "/api/v1/"  # the integration API: the only place a scoped token is let in


@dataclass(frozen=True, slots=True)
class Acting:
    """The request's operator and the desk connection bound to them for this request."""

    who: Principal
    conn: asyncpg.Connection
    console: Console


async def acting(request: Request) -> AsyncIterator[Acting]:
    """Bind a pooled desk connection to the request's operator; unbound before it goes back."""
    console = console_of(request)
    async with console.desk.acquire() as conn, unbound_after(conn):
        who = await resolve(conn, request.cookies.get(SESSION_COOKIE), request.headers.get("authorization"))
        if who.scopes is not None and not request.url.path.startswith(SCOPED_PREFIX):
            raise Forbidden(f"a scoped API token is for {SCOPED_PREFIX} only")
        yield Acting(who, conn, console)


async def reading(request: Request) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the reporting login."""
    async with console_of(request).report.acquire() as conn:
        yield conn


Signed = Annotated[Acting, Depends(acting)]
SignedOnce = Annotated[Acting, Depends(acting, scope="function")]
"""The operator checked, and the desk connection given back as the route returns, before its response
is sent: for a streamed response (``Signed`` holds it until the last byte, as slow as the client)."""
Reader = Annotated[asyncpg.Connection, Depends(reading)]
ReaderOnce = Annotated[asyncpg.Connection, Depends(reading, scope="function")]
"""A reporting connection given back as the route returns (as ``SignedOnce``): a streamed response
reads what it sends before it returns."""
