"""One query and maintenance layer over both storage modes (TimescaleDB and native partitions).

Callers never branch on the mode: ``readings_daily``, ``readings_hourly`` and ``daily_consumption``
exist in both, and
the functions here do whatever the active mode needs (policies run inside TimescaleDB; the daemon
calls :func:`run_maintenance` periodically for the native layout).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from headend.store.results import rows

# The native refresh recomputes this far behind its watermark (the backfill window).
DAILY_LOOKBACK = timedelta(days=7)


async def storage_mode(conn: asyncpg.Connection) -> str:
    """``timescale`` or ``native``, as recorded by the migrations."""
    mode: str | None = await conn.fetchval("SELECT value FROM headend_settings WHERE key = 'storage_mode'")
    if mode is None:
        raise RuntimeError("database is not migrated: run `headend db migrate`")
    return mode


async def ensure_partitions(conn: asyncpg.Connection, start: datetime, end: datetime) -> int:
    """Native mode: create the partitions covering [start, end]; returns how many were new."""
    if await storage_mode(conn) != "native":
        return 0  # TimescaleDB creates chunks itself
    found: int = await conn.fetchval("SELECT headend_ensure_partitions_between($1, $2)", start, end)
    return found


async def detach_partitions_before(
    conn: asyncpg.Connection, cutoff: datetime, *, drop: bool = False
) -> list[str]:
    """Native mode: detach partitions wholly older than ``cutoff`` (and drop them if ``drop``)."""
    if await storage_mode(conn) != "native":
        raise RuntimeError("on TimescaleDB use set_retention(); chunks are dropped by its retention policy")
    async with conn.transaction():
        names = [r[0] for r in await conn.fetch("SELECT headend_detach_partitions_before($1)", cutoff)]
        if drop:
            for name in names:
                await conn.execute(f'DROP TABLE "{name}"')
                await conn.execute("DELETE FROM readings_partitions WHERE name = $1", name)
    return names


async def set_retention(conn: asyncpg.Connection, keep: timedelta | None) -> None:
    """Keep raw readings for ``keep`` (``None``: forever). Daily aggregates are kept regardless."""
    if await storage_mode(conn) == "timescale":
        await conn.execute("SELECT remove_retention_policy('readings', if_exists => true)")
        if keep is not None:
            await conn.execute("SELECT add_retention_policy('readings', $1::interval)", keep)
        return
    if keep is None:
        await conn.execute("DELETE FROM headend_settings WHERE key = 'retention'")
    else:
        await conn.execute(
            "INSERT INTO headend_settings (key, value) VALUES ('retention', $1::interval::text)"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
            keep,
        )


async def set_compression_after(conn: asyncpg.Connection, age: timedelta) -> None:
    """TimescaleDB: compress chunks older than ``age`` (keep it beyond the backfill window)."""
    if await storage_mode(conn) != "timescale":
        raise RuntimeError("compression needs TimescaleDB; this database uses native partitions")
    await conn.execute("SELECT remove_compression_policy('readings', if_exists => true)")
    await conn.execute("SELECT add_compression_policy('readings', $1::interval)", age)


async def refresh_daily(conn: asyncpg.Connection, start: datetime, end: datetime) -> None:
    """Recompute the daily and hourly aggregates for [start, end) (e.g. after a large backfill).

    TimescaleDB refuses this inside a transaction block; call it on a connection without one.
    """
    if await storage_mode(conn) == "timescale":
        for view in ("readings_daily", "readings_hourly"):
            await conn.execute(
                f"CALL refresh_continuous_aggregate('{view}', $1::timestamptz, $2::timestamptz)", start, end
            )
    else:
        await conn.execute("SELECT headend_refresh_daily($1, $2)", start, end)
        await conn.execute("SELECT headend_refresh_hourly($1, $2)", start, end)


async def run_maintenance(conn: asyncpg.Connection, now: datetime) -> None:
    """Periodic upkeep of the native layout (partitions ahead, daily aggregate, retention).

    A no-op on TimescaleDB, whose background jobs do the same.
    """
    if await storage_mode(conn) != "native":
        return
    await ensure_partitions(conn, now - timedelta(days=1), now + timedelta(days=14))
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    mark = await conn.fetchval("SELECT nullif(headend_daily_watermark(), '-infinity')")
    if mark is None:  # never refreshed: start at the oldest reading
        start = await conn.fetchval("SELECT coalesce(min(ts), $1) FROM readings", today)
    else:
        start = mark - DAILY_LOOKBACK
    if start < today:
        await conn.execute("SELECT headend_refresh_daily($1, $2)", start, today)
    hour = now.replace(minute=0, second=0, microsecond=0)
    mark = await conn.fetchval("SELECT nullif(headend_hourly_watermark(), '-infinity')")
    if mark is None:  # never refreshed: start at the oldest reading
        start = await conn.fetchval("SELECT coalesce(min(ts), $1) FROM readings", hour)
    else:
        start = mark - DAILY_LOOKBACK
    if start < hour:
        await conn.execute("SELECT headend_refresh_hourly($1, $2)", start, hour)
    keep = await conn.fetchval("SELECT value::interval FROM headend_settings WHERE key = 'retention'")
    if keep is not None:
        await detach_partitions_before(conn, now - keep, drop=True)


async def daily_values(
    conn: asyncpg.Connection, meter_ids: Sequence[int], quantity: str, start: datetime, end: datetime
) -> list[asyncpg.Record]:
    """Daily first/last/min/max per meter for one quantity over [start, end), from either mode."""
    return await rows(
        conn,
        "SELECT d.meter_id, d.day, d.first_value, d.last_value, d.min_value, d.max_value, d.readings"
        " FROM readings_daily d JOIN quantities q ON q.id = d.quantity_id"
        " WHERE d.meter_id = ANY($1::int[]) AND q.name = $2 AND d.day >= $3 AND d.day < $4"
        " ORDER BY d.meter_id, d.day",
        list(meter_ids),
        quantity,
        start,
        end,
    )
