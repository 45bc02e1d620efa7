"""Shared set-up for billing and fee-control tests on the real PostgreSQL: stored register readings."""

from __future__ import annotations

from datetime import datetime

import asyncpg


async def add_reading(
    conn: asyncpg.Connection, meter: int, ts: datetime, value: float, quantity: str = "energy_import_kwh"
) -> None:
    """Store one register reading (source ``test``), creating the names on first use."""
    await conn.execute("INSERT INTO quantities (name) VALUES ($1) ON CONFLICT DO NOTHING", quantity)
    await conn.execute("INSERT INTO reading_sources (name) VALUES ('test') ON CONFLICT DO NOTHING")
    await conn.execute(
        "INSERT INTO readings (meter_id, quantity_id, ts, value, source_id) SELECT $1, q.id, $2, $3, s.id"
        " FROM quantities q, reading_sources s WHERE q.name = $4 AND s.name = 'test'",
        meter,
        ts,
        value,
        quantity,
    )


async def assign_from_start(conn: asyncpg.Connection, meter: int, account: int | None) -> None:
    """As the schema owner: the meter's first assignment, to ``account`` over all time (none if None)."""
    if account is not None:
        await conn.execute(
            "INSERT INTO meter_assignments (meter_id, account_id, effective_from, operator)"
            " VALUES ($1, $2, '0001-01-01 00:00:00+00', 'system')",
            meter,
            account,
        )
