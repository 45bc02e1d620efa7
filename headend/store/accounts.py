"""Queries on accounts: status listings, the accounts a billing run covers, a new prepaid account.

(Balances, charges and payments are queried by the billing package.)"""

from __future__ import annotations

from decimal import Decimal

import asyncpg


async def account_statuses(conn: asyncpg.Connection, number: str | None = None) -> list[asyncpg.Record]:
    """Balance (text), credit limit, arrears flag and notice of one account or all, by number."""
    return await conn.fetch(
        """SELECT a.number, a.kind, coalesce(b.balance, 0)::text AS balance, a.credit_limit::text,
                  a.arrears, a.arrears_since, a.notice_sent_at, a.protected
           FROM accounts a LEFT JOIN balances b ON b.account_id = a.id
           WHERE $1::text IS NULL OR a.number = $1 ORDER BY a.number""",
        number,
    )


async def billable_accounts(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """``id, number`` of every active account with a tariff, by number."""
    return await conn.fetch(
        "SELECT id, number FROM accounts WHERE active AND tariff_id IS NOT NULL ORDER BY number"
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
