"""Queries on accounts for the operators' CLI: status listings and the accounts a billing run covers.

(Balances, charges and payments are queried by the billing package.)"""

from __future__ import annotations

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
