"""Queries on accounts: status listings, the accounts a billing run covers, new and changed accounts,
meter-to-account assignments (with effective times) and move-out readings.

(Balances, charges and payments are queried by headend.store.billing.)"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import asyncpg

from headend.store.results import row, rows

ACCOUNT_COLUMNS = """a.number, a.name, a.kind, t.name AS tariff, a.credit_limit::text, a.grace_days,
    a.protected, a.protected_reason, a.reconnect_mode, a.alarm_before_cut, a.active, a.arrears,
    a.arrears_since, a.notice_sent_at,
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
    done: str = await conn.execute(
        f"UPDATE accounts SET {columns}, updated_at = now() WHERE number = $1", number, *changes.values()
    )
    return done != "UPDATE 0"


async def accounts(conn: asyncpg.Connection, number: str | None = None) -> list[asyncpg.Record]:
    """Accounts with tariff name and balance (one, or all)."""
    return await rows(
        conn,
        f"""SELECT {ACCOUNT_COLUMNS} FROM accounts a LEFT JOIN tariffs t ON t.id = a.tariff_id
            LEFT JOIN balances b ON b.account_id = a.id
            WHERE $1::text IS NULL OR a.number = $1 ORDER BY a.number""",
        number,
    )


async def account_ref(conn: asyncpg.Connection, number: str) -> asyncpg.Record | None:
    """``id``, ``kind`` and ``billed_until`` of an account by number."""
    return await row(
        conn,
        """SELECT a.id, a.kind, b.billed_until FROM accounts a LEFT JOIN balances b ON b.account_id = a.id
           WHERE a.number = $1""",
        number,
    )


async def lock_meter(conn: asyncpg.Connection, meter_id: int) -> None:
    """Lock the meter row for an assignment change (one change of its account at a time)."""
    await conn.execute("SELECT 1 FROM meters WHERE id = $1 FOR UPDATE", meter_id)


async def open_assignment(conn: asyncpg.Connection, meter_id: int) -> asyncpg.Record | None:
    """The meter's current assignment row, if it has any."""
    return await row(
        conn,
        """SELECT a.id, a.account_id, a.effective_from, b.billed_until FROM meter_assignments a
           LEFT JOIN balances b ON b.account_id = a.account_id
           WHERE a.meter_id = $1 AND a.effective_to IS NULL""",
        meter_id,
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


async def assignments(conn: asyncpg.Connection, number: str) -> list[asyncpg.Record]:
    """The assignment history of an account's meters."""
    return await rows(
        conn,
        """SELECT coalesce(m.name, m.address) AS meter, x.effective_from, x.effective_to, x.operator
           FROM meter_assignments x JOIN meters m ON m.id = x.meter_id JOIN accounts a ON a.id = x.account_id
           WHERE a.number = $1 ORDER BY x.effective_from""",
        number,
    )


async def add_register_reading(
    conn: asyncpg.Connection, meter_id: int, at: datetime, value: Decimal, source: str
) -> None:
    """A register reading taken by a person (a move-out reading), stored like a polled one; the
    database takes it from an authenticated admin only (migration 0010)."""
    await conn.execute(
        "SELECT headend_add_manual_reading($1, $2, $3, $4)", meter_id, at, float(value), source
    )


async def account_statuses(conn: asyncpg.Connection, number: str | None = None) -> list[asyncpg.Record]:
    """Balance (text), credit limit, arrears flag and notice of one account or all, by number."""
    return await rows(
        conn,
        """SELECT a.number, a.kind, coalesce(b.balance, 0)::text AS balance, a.credit_limit::text,
                  a.arrears, a.arrears_since, a.notice_sent_at, a.protected
           FROM accounts a LEFT JOIN balances b ON b.account_id = a.id
           WHERE $1::text IS NULL OR a.number = $1 ORDER BY a.number""",
        number,
    )


async def billable_accounts(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """``id, number`` of every active account with a tariff, by number."""
    return await rows(
        conn, "SELECT id, number FROM accounts WHERE active AND tariff_id IS NOT NULL ORDER BY number"
    )


async def create_prepaid_account(
    conn: asyncpg.Connection,
    number: str,
    name: str,
    *,
    tariff: str,
    price_per_kwh: Decimal,
    opening: Decimal,
) -> int:
    """A flat ``tariff`` and a prepaid account on it with an ``opening`` balance (ledger and balance
    in step), in one transaction; returns the account id."""
    async with conn.transaction():
        tariff_id = await conn.fetchval(
            "INSERT INTO tariffs (name, kind) VALUES ($1, 'flat') RETURNING id", tariff
        )
        await conn.execute(
            "INSERT INTO tariff_prices (tariff_id, register, price, effective_from)"
            " VALUES ($1, 'total', $2, '2000-01-01T00:00:00Z')",
            tariff_id,
            price_per_kwh,
        )
        account_id: int = await conn.fetchval(
            "INSERT INTO accounts (number, name, kind, tariff_id, credit_limit)"
            " VALUES ($1, $2, 'prepaid', $3, 0) RETURNING id",
            number,
            name,
            tariff_id,
        )
        await conn.execute(
            "INSERT INTO ledger (account_id, kind, amount, idempotency_key, details)"
            " VALUES ($1, 'adjustment', $2, $3, '{\"opening\": true}'::jsonb)",
            account_id,
            opening,
            f"opening:{number}",
        )
        await conn.execute("INSERT INTO balances (account_id, balance) VALUES ($1, $2)", account_id, opening)
    return account_id
