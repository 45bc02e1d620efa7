"""The payment already recorded under a reference (so a reused reference can be told from a retry)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import asyncpg


@dataclass(frozen=True, slots=True)
class RecordedPayment:
    """What a reference was first recorded as."""

    account: str
    amount: Decimal


async def payment_by_reference(conn: asyncpg.Connection, reference: str) -> RecordedPayment | None:
    """The payment stored under ``reference``, or None."""
    row = await conn.fetchrow(
        "SELECT a.number, p.amount FROM payments p JOIN accounts a ON a.id = p.account_id"
        " WHERE p.reference = $1",
        reference,
    )
    return None if row is None else RecordedPayment(row["number"], Decimal(row["amount"]))
