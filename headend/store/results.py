"""Typed results of asyncpg queries (asyncpg ships no type information): the query modules return
rows through these, so what leaves ``headend.store`` has a type."""

from __future__ import annotations

from typing import Protocol

import asyncpg


class Queryable(Protocol):
    """A connection or a pool."""

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]: ...

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None: ...

    async def fetchval(self, query: str, *args: object) -> object: ...


async def rows(conn: Queryable, query: str, *args: object) -> list[asyncpg.Record]:
    """Every row of ``query``."""
    return await conn.fetch(query, *args)


async def row(conn: Queryable, query: str, *args: object) -> asyncpg.Record | None:
    """The first row of ``query``, or None."""
    return await conn.fetchrow(query, *args)
