"""Postpaid settlement: the money an account has paid settles its bills oldest first."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import asyncpg

from headend.store import billing as store


async def settle_bills(conn: asyncpg.Connection, account_id: int, at: datetime) -> list[int]:
    """Mark as paid (at ``at``) the oldest unpaid bills the account's credit covers; returns their ids.

    Every bill is charged to the ledger when issued, so the money available for the unpaid bills is
    the balance plus what they amount to."""
    bills = await store.unpaid_bills(conn, account_id)
    available = await store.balance_of(conn, account_id) + sum((b["amount"] for b in bills), Decimal(0))
    paid = []
    for bill in bills:
        if available < bill["amount"]:
            break
        available -= bill["amount"]
        paid.append(bill["id"])
    if paid:
        await store.mark_paid(conn, paid, at)
    return paid
