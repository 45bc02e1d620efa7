"""SQL of tariffs: definitions, prices, and what time-of-use and tiered pricing need from readings."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

import asyncpg

from headend.store.results import row, rows


async def insert_tariff(
    conn: asyncpg.Connection,
    name: str,
    kind: str,
    definition: dict[str, object],
    prices: list[tuple[str, Decimal]],
    effective_from: datetime,
) -> int:
    """A tariff with its register prices; its id."""
    tariff_id = int(
        await conn.fetchval(
            "INSERT INTO tariffs (name, kind, definition) VALUES ($1, $2, $3::jsonb) RETURNING id",
            name,
            kind,
            json.dumps(definition),
        )
    )
    await insert_prices(conn, tariff_id, prices, effective_from)
    return tariff_id


async def insert_prices(
    conn: asyncpg.Connection, tariff_id: int, prices: list[tuple[str, Decimal]], effective_from: datetime
) -> None:
    """Register prices of a tariff in force from ``effective_from`` on."""
    await conn.executemany(
        "INSERT INTO tariff_prices (tariff_id, register, price, effective_from) VALUES ($1, $2, $3, $4)",
        [(tariff_id, register, price, effective_from) for register, price in prices],
    )


async def insert_revision(
    conn: asyncpg.Connection, tariff_id: int, definition: dict[str, object], effective_from: datetime
) -> None:
    """A tariff's slots or blocks in force from ``effective_from`` on."""
    await conn.execute(
        "INSERT INTO tariff_revisions (tariff_id, effective_from, definition) VALUES ($1, $2, $3::jsonb)",
        tariff_id,
        effective_from,
        json.dumps(definition),
    )


async def revisions(conn: asyncpg.Connection, tariff_id: int) -> list[asyncpg.Record]:
    """``effective_from, definition`` (JSON text) of a tariff's revisions, oldest first."""
    return await rows(
        conn,
        "SELECT effective_from, definition::text AS definition FROM tariff_revisions"
        " WHERE tariff_id = $1 ORDER BY effective_from",
        tariff_id,
    )


async def last_charged_end(conn: asyncpg.Connection, tariff_id: int) -> datetime | None:
    """The end of the latest period charged to an account on the tariff (bills and prepaid charges)."""
    end: datetime | None = await conn.fetchval(
        """SELECT max(l.period_end) FROM ledger l JOIN accounts a ON a.id = l.account_id
           WHERE a.tariff_id = $1 AND l.kind = 'charge'""",
        tariff_id,
    )
    return end


async def tariff(conn: asyncpg.Connection, tariff_id: int) -> asyncpg.Record:
    """Kind and (first) definition of a tariff."""
    return await row(conn, "SELECT kind, definition FROM tariffs WHERE id = $1", tariff_id)


async def tariff_by_name(conn: asyncpg.Connection, name: str) -> asyncpg.Record | None:
    """``id, kind, definition`` (JSON text) and the registers priced of a tariff by name."""
    return await conn.fetchrow(
        """SELECT t.id, t.kind, t.definition::text AS definition,
                  array(SELECT DISTINCT register FROM tariff_prices WHERE tariff_id = t.id) AS registers
           FROM tariffs t WHERE t.name = $1""",
        name,
    )


async def tariffs(conn: asyncpg.Connection, name: str | None = None) -> list[asyncpg.Record]:
    """Tariffs (one, or all) with their register prices."""
    return await rows(
        conn,
        """SELECT t.name, t.kind, t.currency, t.definition,
                  coalesce(jsonb_agg(jsonb_build_object('register', p.register, 'price', p.price::text,
                           'from', p.effective_from) ORDER BY p.register, p.effective_from)
                           FILTER (WHERE p.register IS NOT NULL), '[]') AS prices,
                  (SELECT coalesce(jsonb_agg(jsonb_build_object('from', r.effective_from,
                           'definition', r.definition) ORDER BY r.effective_from), '[]')
                   FROM tariff_revisions r WHERE r.tariff_id = t.id) AS revisions
           FROM tariffs t LEFT JOIN tariff_prices p ON p.tariff_id = t.id
           WHERE $1::text IS NULL OR t.name = $1 GROUP BY t.id ORDER BY t.name""",
        name,
    )


async def month_to_date_kwh(
    conn: asyncpg.Connection, account_id: int, since: datetime, until: datetime
) -> Decimal:
    """kWh already charged to the account for periods ending in ``(since, until]``."""
    value = await conn.fetchval(
        """SELECT coalesce(sum((details->>'kwh')::numeric), 0) FROM ledger
           WHERE account_id = $1 AND kind = 'charge' AND period_end > $2 AND period_end <= $3""",
        account_id,
        since,
        until,
    )
    return Decimal(value)


async def interval_readings(
    conn: asyncpg.Connection, meter_ids: list[int], start: datetime, end: datetime
) -> list[asyncpg.Record]:
    """Valid total-register readings of the meters in ``[start, end]``, per meter in time order."""
    return await rows(
        conn,
        """SELECT r.meter_id, r.ts, r.value FROM readings r JOIN quantities q ON q.id = r.quantity_id
           WHERE r.meter_id = ANY($1::int[]) AND q.name = 'energy_import_kwh' AND r.ts BETWEEN $2 AND $3
             AND r.value IS NOT NULL AND r.quality NOT IN ('suspect', 'missing')
           ORDER BY r.meter_id, r.ts""",
        meter_ids,
        start,
        end,
    )


async def tariff_id_by_name(conn: asyncpg.Connection, name: str) -> int | None:
    """A tariff's id by name."""
    found: int | None = await conn.fetchval("SELECT id FROM tariffs WHERE name = $1", name)
    return found
