"""How the console's reads are planned. Its reporting connections plan generically (once per pooled
connection: planning a query without a time bound over a year of TimescaleDB chunks costs more than
running it); a query bounded in time runs in a ``custom_plans`` transaction, planned for its
parameters, so that it touches only the chunks or partitions of its range."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg


@asynccontextmanager
async def custom_plans(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """A read-only transaction whose statements are planned for their parameters: a query bounded in
    time takes 25–60 ms on its first run on a connection instead of 300–400 ms, and later runs no
    longer (bench/console.py)."""
    async with conn.transaction(readonly=True):
        await plan_for_parameters(conn)
        yield


async def plan_for_parameters(conn: asyncpg.Connection) -> None:
    """In a transaction: its later statements are planned for their parameters (as in
    ``custom_plans``)."""
    await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")


async def plan_generically(conn: asyncpg.Connection) -> None:
    """In a transaction: its later statements are planned generically (once per connection), as
    outside it: those over the whole range of the readings, and small ones run at every request, whose
    planning costs more than their run."""
    await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
