"""Read-only queries behind the web console's account pages (run under the reporting login): an
account's recent payments."""

from __future__ import annotations

import asyncpg

Row = dict[str, object]

_PAYMENTS = """
SELECT p.id, p.amount::text AS amount, p.reference, p.source, p.operator, p.paid_at, p.created_at
FROM payments p JOIN accounts a ON a.id = p.account_id
WHERE a.number = $1 ORDER BY p.paid_at DESC, p.id DESC LIMIT $2
"""


async def payments(conn: asyncpg.Connection, number: str, limit: int = 50) -> list[Row]:
    """The account's newest ``limit`` payments (amounts as text), newest first."""
    return [dict(r) for r in await conn.fetch(_PAYMENTS, number, limit)]
