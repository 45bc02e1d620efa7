"""Scheduled prepaid billing: balances follow the stored readings, so arrears follow consumption.

In the daemon: ``[engine] services = ["headend.billing.service:run", ...]``, every
``[billing] run_every``. Each pass bills every active prepaid account with a tariff from where its
balance was last billed (or its first reading) up to the latest interval all its meters have read.
Charges are idempotent per period; a period with a missing register reading charges nothing and
is retried on the next pass.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from headend.billing.charging import BillingError, bill_account
from headend.services import ServiceHost

log = logging.getLogger(__name__)

_DUE = """
WITH latest AS (
    SELECT m.account_id, m.id AS meter_id,
           (SELECT max(r.ts) FROM readings r WHERE r.meter_id = m.id AND r.quantity_id = q.id
                AND r.value IS NOT NULL) AS last_ts,
           (SELECT min(r.ts) FROM readings r WHERE r.meter_id = m.id AND r.quantity_id = q.id
                AND r.value IS NOT NULL) AS first_ts
    FROM meters m CROSS JOIN (SELECT id FROM quantities WHERE name = 'energy_import_kwh') q
    WHERE m.account_id IS NOT NULL
)
SELECT a.id, a.number, b.billed_until, max(l.first_ts) AS first_ts, min(l.last_ts) AS last_ts,
       bool_and(l.last_ts IS NOT NULL) AS every_meter_read
FROM accounts a JOIN latest l ON l.account_id = a.id LEFT JOIN balances b ON b.account_id = a.id
WHERE a.active AND a.kind = 'prepaid' AND a.tariff_id IS NOT NULL
GROUP BY a.id, a.number, b.billed_until ORDER BY a.id
"""


@dataclass(frozen=True)
class BilledPeriod:
    """One account's billing attempt: ``amount`` charged, or ``error`` saying why nothing was."""

    account: str
    start: datetime
    end: datetime
    amount: Decimal | None
    error: str | None = None


async def bill_due_prepaid(conn: asyncpg.Connection) -> list[BilledPeriod]:
    """Bill every prepaid account's readings since it was last billed; returns what was attempted."""
    periods = []
    for row in await conn.fetch(_DUE):
        start, end = row["billed_until"] or row["first_ts"], row["last_ts"]
        if not row["every_meter_read"] or start is None or end <= start:
            continue
        try:
            amount = await bill_account(conn, row["id"], start, end)
        except BillingError as exc:
            periods.append(BilledPeriod(row["number"], start, end, None, str(exc)))
            continue
        periods.append(BilledPeriod(row["number"], start, end, amount))
    return periods


async def run_pass(engine: ServiceHost) -> list[BilledPeriod]:
    """One scheduled billing pass on the engine's pool, each attempt logged; returns the attempts."""
    async with engine.pool.acquire() as conn:
        periods = await bill_due_prepaid(conn)
    for period in periods:
        log.log(
            logging.INFO if period.error is None else logging.WARNING,
            "billed" if period.error is None else "billing deferred",
            extra={
                "account": period.account,
                "end": period.end.isoformat(),
                "amount": str(period.amount),
                "error": period.error,
            },
        )
    return periods


async def run(engine: ServiceHost) -> None:
    """Run a billing pass every ``[billing] run_every`` until the daemon stops."""
    while True:
        try:
            await run_pass(engine)
        except Exception:
            log.exception("billing pass failed")
        await asyncio.sleep(engine.config.billing.run_every)
