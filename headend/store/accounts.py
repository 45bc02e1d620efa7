"""SQL of accounts and meter-to-account assignments."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import asyncpg

ACCOUNT_COLUMNS = """a.number, a.name, a.kind, t.name AS tariff, a.credit_limit::text, a.grace_days,
    a.protected, a.protected_reason, a.reconnect_mode, a.active, a.arrears, a.arrears_since, a.notice_sent_at,
    coalesce(b.balance, 0)::text AS balance, b.billed_until"""


async def insert_account(
    conn: asyncpg.Connection, number: str, name: str, kind: str, tariff_id: int | None, credit_limit: Decimal
) -> int:
    """A new account; its id."""
    return int(
        await conn.fetchval(
            """INSERT INTO accounts (number, name, kind, tariff_id, credit_limit) VALUES ($1, $2, $3, $4, $5)
               RETURNING id""",
            number,
            name,
            kind,
            tariff_id,
            credit_limit,
        )
    )


async def update_account(conn: asyncpg.Connection, number: str, changes: dict[str, object]) -> bool:
    """Set the given columns (names from a fixed list of the caller) of an account; False if unknown."""
    columns = ", ".join(f"{column} = ${n}" for n, column in enumerate(changes, start=2))
    done = await conn.execute(
        f"UPDATE accounts SET {columns}, updated_at = now() WHERE number = $1", number, *changes.values()
    )
    return done != "UPDATE 0"


async def accounts(conn: asyncpg.Connection, number: str | None = None) -> list[asyncpg.Record]:
    """Accounts with tariff name and balance (one, or all)."""
    return await conn.fetch(
        f"""SELECT {ACCOUNT_COLUMNS} FROM accounts a LEFT JOIN tariffs t ON t.id = a.tariff_id
            LEFT JOIN balances b ON b.account_id = a.id
            WHERE $1::text IS NULL OR a.number = $1 ORDER BY a.number""",
        number,
    )


async def account_ref(conn: asyncpg.Connection, number: str) -> asyncpg.Record | None:
    """``id``, ``kind`` and ``billed_until`` of an account by number."""
    return await conn.fetchrow(
        """SELECT a.id, a.kind, b.billed_until FROM accounts a LEFT JOIN balances b ON b.account_id = a.id
           WHERE a.number = $1""",
        number,
    )


async def tariff_id(conn: asyncpg.Connection, name: str) -> int | None:
    """A tariff's id by name."""
    return await conn.fetchval("SELECT id FROM tariffs WHERE name = $1", name)


async def lock_meter(conn: asyncpg.Connection, meter_id: int) -> asyncpg.Record:
    """The meter row (locked for the assignment change) with its current account."""
    return await conn.fetchrow(
        """SELECT m.id, m.account_id, b.billed_until FROM meters m
           LEFT JOIN balances b ON b.account_id = m.account_id WHERE m.id = $1 FOR UPDATE OF m""",
        meter_id,
    )


async def open_assignment(conn: asyncpg.Connection, meter_id: int) -> asyncpg.Record | None:
    """The meter's current assignment row, if it has any."""
    return await conn.fetchrow(
        """SELECT a.id, a.account_id, a.effective_from, b.billed_until FROM meter_assignments a
           LEFT JOIN balances b ON b.account_id = a.account_id
           WHERE a.meter_id = $1 AND a.effective_to IS NULL""",
        meter_id,
    )


async def has_assignments(conn: asyncpg.Connection, meter_id: int) -> bool:
    """Whether the meter has assignment rows (else it bills to meters.account_id over all time)."""
    return bool(
        await conn.fetchval("SELECT EXISTS (SELECT 1 FROM meter_assignments WHERE meter_id = $1)", meter_id)
    )


async def end_assignment(conn: asyncpg.Connection, assignment_id: int, at: datetime) -> None:
    """Close an assignment at ``at``."""
    await conn.execute("UPDATE meter_assignments SET effective_to = $2 WHERE id = $1", assignment_id, at)


async def insert_assignment(
    conn: asyncpg.Connection,
    meter_id: int,
    account_id: int,
    start: datetime,
    end: datetime | None,
    operator: str,
) -> int:
    """An assignment row; its id."""
    return int(
        await conn.fetchval(
            """INSERT INTO meter_assignments (meter_id, account_id, effective_from, effective_to, operator)
               VALUES ($1, $2, $3, $4, $5) RETURNING id""",
            meter_id,
            account_id,
            start,
            end,
            operator,
        )
    )


async def set_current_account(conn: asyncpg.Connection, meter_id: int, account_id: int | None) -> None:
    """The account the meter belongs to now (fee control and manual commands look here)."""
    await conn.execute(
        "UPDATE meters SET account_id = $2, updated_at = now() WHERE id = $1", meter_id, account_id
    )


async def assignments(conn: asyncpg.Connection, number: str) -> list[asyncpg.Record]:
    """The assignment history of an account's meters."""
    return await conn.fetch(
        """SELECT coalesce(m.name, m.address) AS meter, x.effective_from, x.effective_to, x.operator
           FROM meter_assignments x JOIN meters m ON m.id = x.meter_id JOIN accounts a ON a.id = x.account_id
           WHERE a.number = $1 ORDER BY x.effective_from""",
        number,
    )


async def add_register_reading(
    conn: asyncpg.Connection, meter_id: int, at: datetime, value: Decimal, source: str
) -> None:
    """A register reading taken by a person (a move-out reading), stored like a polled one."""
    await conn.execute("INSERT INTO reading_sources (name) VALUES ($1) ON CONFLICT DO NOTHING", source)
    await conn.execute("INSERT INTO quantities (name) VALUES ('energy_import_kwh') ON CONFLICT DO NOTHING")
    await conn.execute(
        """INSERT INTO readings (meter_id, quantity_id, ts, value, source_id)
           SELECT $1, q.id, $2, $3, s.id FROM quantities q, reading_sources s
           WHERE q.name = 'energy_import_kwh' AND s.name = $4
           ON CONFLICT (meter_id, quantity_id, ts) DO NOTHING""",
        meter_id,
        at,
        float(value),
        source,
    )
