"""Queries on line losses: the SQL refresh of one day's area losses and the daily / monthly figures."""

from __future__ import annotations

from datetime import date, datetime

import asyncpg

from headend.store.results import rows


async def refresh_day(conn: asyncpg.Connection, day: date, lo: datetime, hi: datetime) -> int:
    """Compute every area's loss for ``day`` (registers at ``lo`` and ``hi``) in the database; returns
    how many area-days were new or changed."""
    written: int = await conn.fetchval("SELECT headend_line_loss_refresh($1, $2, $3)", day, lo, hi)
    return written


async def daily_losses(conn: asyncpg.Connection, day: date, area: str | None) -> list[asyncpg.Record]:
    """``area, supply_kwh, customers_kwh, loss_kwh, loss_pct, meters, missing`` (meter labels) of the
    areas' computed losses on ``day``, by area name."""
    return await rows(
        conn,
        """
        SELECT a.name AS area, l.supply_kwh, l.customers_kwh, l.loss_kwh, l.loss_pct, l.meters,
               ARRAY(SELECT coalesce(m.name, m.address) FROM unnest(l.missing) AS x(id)
                     JOIN meters m ON m.id = x.id ORDER BY 1) AS missing
        FROM line_losses l JOIN areas a ON a.id = l.area_id
        WHERE l.day = $1 AND ($2::text IS NULL OR a.name = $2)
        ORDER BY a.name
        """,
        day,
        area,
    )


async def monthly_losses(
    conn: asyncpg.Connection, first: date, after: date, area: str | None
) -> list[asyncpg.Record]:
    """Per area, the sums of its complete days in ``[first, after)`` and the days not complete
    (``incomplete_days``: computed incomplete or not computed at all), by area name."""
    return await rows(
        conn,
        """
        SELECT a.name AS area, sum(l.supply_kwh) AS supply_kwh, sum(l.customers_kwh) AS customers_kwh,
               sum(l.loss_kwh) AS loss_kwh,
               100 * sum(l.loss_kwh) / nullif(sum(l.supply_kwh), 0) AS loss_pct,
               ARRAY(SELECT d::date FROM generate_series($1::date, $2::date - 1, interval '1 day') AS d
                     WHERE NOT EXISTS (SELECT 1 FROM line_losses c WHERE c.area_id = a.id
                                       AND c.day = d::date AND c.loss_kwh IS NOT NULL)
                     ORDER BY 1) AS incomplete_days
        FROM areas a LEFT JOIN line_losses l ON l.area_id = a.id AND l.day >= $1 AND l.day < $2
        WHERE $3::text IS NULL OR a.name = $3
        GROUP BY a.id, a.name
        ORDER BY a.name
        """,
        first,
        after,
        area,
    )


async def area_exists(conn: asyncpg.Connection, name: str) -> bool:
    """Whether an area of that name exists."""
    found: bool = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM areas WHERE name = $1)", name)
    return found
