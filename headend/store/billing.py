"""SQL of billing: prices, the meters an account is billed for, register values, charges, bills, balances."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import asyncpg

from headend.store.results import row, rows


async def account_for_billing(conn: asyncpg.Connection, account_id: int) -> asyncpg.Record | None:
    """Kind and tariff of an account."""
    return await row(conn, "SELECT id, number, kind, tariff_id FROM accounts WHERE id = $1", account_id)


async def tariff_prices(conn: asyncpg.Connection, tariff_id: int) -> list[asyncpg.Record]:
    """Every price row of a tariff."""
    return await rows(
        conn, "SELECT register, price, effective_from FROM tariff_prices WHERE tariff_id = $1", tariff_id
    )


async def assigned_meters(
    conn: asyncpg.Connection, account_id: int, start: datetime, end: datetime
) -> list[asyncpg.Record]:
    """The account's meters in ``[start, end]``, each with the part of the period it was assigned
    (``from_ts``, ``to_ts``): the assignment rows are the only record of which account a meter bills to."""
    return await rows(
        conn,
        """SELECT m.id, m.multiplier, m.protocol, m.settings,
                  greatest(a.effective_from, $2) AS from_ts,
                  least(coalesce(a.effective_to, 'infinity'), $3) AS to_ts
           FROM meter_assignments a JOIN meters m ON m.id = a.meter_id
           WHERE a.account_id = $1 AND a.effective_from < $3 AND coalesce(a.effective_to, 'infinity') > $2
           ORDER BY 1, 5""",
        account_id,
        start,
        end,
    )


async def swaps_into(
    conn: asyncpg.Connection, meter_ids: list[int], start: datetime, end: datetime
) -> list[asyncpg.Record]:
    """Recorded replacements with one of ``meter_ids`` as the new meter, inside ``(start, end]``."""
    return await rows(
        conn,
        """SELECT r.new_meter_id, r.old_meter_id, r.replaced_at, r.final_kwh, r.initial_kwh,
                  m.multiplier AS old_multiplier, m.protocol AS old_protocol, m.settings AS old_settings
           FROM meter_replacements r JOIN meters m ON m.id = r.old_meter_id
           WHERE r.new_meter_id = ANY($1::int[]) AND r.replaced_at > $2 AND r.replaced_at <= $3""",
        meter_ids,
        start,
        end,
    )


async def replacements_of(
    conn: asyncpg.Connection, meter_ids: list[int], start: datetime, end: datetime
) -> list[asyncpg.Record]:
    """Recorded replacements of or by one of ``meter_ids`` inside ``[start, end]`` (old and new meter,
    time, final and initial registers)."""
    return await rows(
        conn,
        """SELECT old_meter_id, new_meter_id, replaced_at, final_kwh, initial_kwh FROM meter_replacements
           WHERE (old_meter_id = ANY($1::int[]) OR new_meter_id = ANY($1::int[]))
             AND replaced_at >= $2 AND replaced_at <= $3""",
        meter_ids,
        start,
        end,
    )


async def register_value(
    conn: asyncpg.Connection, meter_id: int, quantity: str, at: datetime
) -> asyncpg.Record | None:
    """The latest valid (not suspect) reading of a register at or before ``at``: ``ts``, ``value``."""
    return await row(
        conn,
        """SELECT r.ts, r.value FROM readings r JOIN quantities q ON q.id = r.quantity_id
           WHERE r.meter_id = $1 AND q.name = $2 AND r.ts <= $3 AND r.value IS NOT NULL
             AND r.quality NOT IN ('suspect', 'missing')
           ORDER BY r.ts DESC LIMIT 1""",
        meter_id,
        quantity,
        at,
    )


async def insert_bill(
    conn: asyncpg.Connection,
    account_id: int,
    start: datetime,
    end: datetime,
    kwh: Decimal,
    amount: Decimal,
    due_at: datetime,
) -> int | None:
    """A postpaid bill, once per (account, period start); its id, or None if it existed."""
    found: int | None = await conn.fetchval(
        """INSERT INTO bills (account_id, period_start, period_end, consumption, amount, due_at)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account_id, period_start) DO NOTHING RETURNING id""",
        account_id,
        start,
        end,
        kwh,
        amount,
        due_at,
    )
    return found


async def insert_ledger(
    conn: asyncpg.Connection,
    account_id: int,
    kind: str,
    amount: Decimal,
    key: str,
    details: str,
    start: datetime | None = None,
    end: datetime | None = None,
) -> int | None:
    """A ledger row once per idempotency ``key`` (``details`` is JSON); its id, or None if it existed."""
    found: int | None = await conn.fetchval(
        """INSERT INTO ledger (account_id, kind, amount, period_start, period_end, idempotency_key, details)
           VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
           ON CONFLICT (idempotency_key) DO NOTHING RETURNING id""",
        account_id,
        kind,
        amount,
        start,
        end,
        key,
        details,
    )
    return found


async def add_to_balance(
    conn: asyncpg.Connection, account_id: int, amount: Decimal, billed_until: datetime | None = None
) -> Decimal:
    """Add ``amount`` to the balance (and move ``billed_until`` when given); returns the new balance."""
    found: Decimal = await conn.fetchval(
        """INSERT INTO balances (account_id, balance, billed_until) VALUES ($1, $2, $3)
           ON CONFLICT (account_id) DO UPDATE SET balance = balances.balance + EXCLUDED.balance,
           billed_until = coalesce(EXCLUDED.billed_until, balances.billed_until), updated_at = now()
           RETURNING balance""",
        account_id,
        amount,
        billed_until,
    )
    return found


async def balance_of(conn: asyncpg.Connection, account_id: int) -> Decimal:
    """The account's balance (0 without a row)."""
    return Decimal(
        await conn.fetchval(
            "SELECT coalesce((SELECT balance FROM balances WHERE account_id = $1), 0)", account_id
        )
    )


async def unpaid_bills(conn: asyncpg.Connection, account_id: int) -> list[asyncpg.Record]:
    """Unpaid bills, oldest first (locked for settlement)."""
    return await rows(
        conn,
        """SELECT id, amount FROM bills WHERE account_id = $1 AND paid_at IS NULL
           ORDER BY period_start, id FOR UPDATE""",
        account_id,
    )


async def mark_paid(conn: asyncpg.Connection, bill_ids: list[int], at: datetime) -> None:
    """Settle bills."""
    await conn.execute("UPDATE bills SET paid_at = $2 WHERE id = ANY($1::bigint[])", bill_ids, at)


DUE_PREPAID = """
WITH RECURSIVE q AS (SELECT id FROM quantities WHERE name = 'energy_import_kwh'),
links AS (
    SELECT a.account_id, a.meter_id, a.effective_from AS from_ts, a.effective_to AS to_ts
    FROM meter_assignments a
),
lineage (meter_id, member_id) AS (  -- each linked meter and the meters it replaced, however far back
    SELECT DISTINCT meter_id, meter_id FROM links
    UNION
    SELECT g.meter_id, x.old_meter_id FROM lineage g JOIN meter_replacements x ON x.new_meter_id = g.member_id
),
reach AS (
    SELECT l.account_id, l.from_ts, l.to_ts, s.validated_until,
           -- a link a replacement opened starts at the new meter's recorded initial register, one it
           -- closed ends at the old meter's final register: neither waits for a reading there
           EXISTS (SELECT 1 FROM meter_replacements x
                   WHERE x.new_meter_id = l.meter_id AND x.replaced_at = l.from_ts) AS opened_by_swap,
           EXISTS (SELECT 1 FROM meter_replacements x
                   WHERE x.old_meter_id = l.meter_id AND x.replaced_at = l.to_ts) AS closed_by_swap,
           -- the first good reading of each member: one walk up the (meter, quantity, ts) key,
           -- never a scan of every reading (a join here re-read all readings per link)
           (SELECT min(f.ts) FROM lineage g CROSS JOIN LATERAL (
                SELECT r.ts FROM readings r
                WHERE r.meter_id = g.member_id AND r.quantity_id = q.id
                  AND r.value IS NOT NULL AND r.quality NOT IN ('suspect', 'missing')
                ORDER BY r.ts LIMIT 1) f
             WHERE g.meter_id = l.meter_id) AS first_ts
    FROM links l CROSS JOIN q LEFT JOIN vee_state s ON s.meter_id = l.meter_id AND s.quantity_id = q.id
),
starts AS (  -- where an account never billed begins: once every meter it holds has a reading
    SELECT r.account_id,
           max(greatest(r.first_ts, CASE WHEN r.opened_by_swap THEN '-infinity' ELSE r.from_ts END))
               AS first_ts
    FROM reach r
    WHERE r.to_ts IS NULL OR r.first_ts < r.to_ts  -- a link that ended before its meter was read: none
    GROUP BY r.account_id
)
SELECT a.id, a.number, b.billed_until, st.first_ts,
       -- the replaced meter's part ends at its final register: the new meter's readings bound the end
       min(CASE WHEN r.closed_by_swap THEN 'infinity'
                ELSE least(r.validated_until, coalesce(r.to_ts, 'infinity')) END) AS last_ts,
       bool_and(r.validated_until IS NOT NULL OR r.closed_by_swap) AS every_meter_read
FROM accounts a JOIN starts st ON st.account_id = a.id JOIN reach r ON r.account_id = a.id
LEFT JOIN balances b ON b.account_id = a.id
WHERE a.active AND a.kind = 'prepaid' AND a.tariff_id IS NOT NULL
  AND (r.to_ts IS NULL OR r.to_ts > coalesce(b.billed_until, st.first_ts, '-infinity'))
GROUP BY a.id, a.number, b.billed_until, st.first_ts ORDER BY a.id
"""


async def due_prepaid(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Per prepaid account: where it was billed until, its first reading (across replaced meters) and
    how far every meter of it has been validated (the end of the next period)."""
    return await rows(conn, DUE_PREPAID)


async def insert_payment(
    conn: asyncpg.Connection,
    account_id: int,
    amount: Decimal,
    reference: str,
    source: str,
    operator: str,
    paid_at: datetime | None,
) -> int | None:
    """A payment once per reference; its id, or None if the reference was paid already."""
    found: int | None = await conn.fetchval(
        """INSERT INTO payments (account_id, amount, reference, source, operator, paid_at)
           VALUES ($1, $2, $3, $4, $5, coalesce($6, now())) ON CONFLICT (reference) DO NOTHING
           RETURNING id""",
        account_id,
        amount,
        reference,
        source,
        operator,
        paid_at,
    )
    return found


async def insert_replacement(
    conn: asyncpg.Connection, old_id: int, new_id: int, at: datetime, final: str, initial: str, operator: str
) -> int:
    """A meter replacement record (final and initial registers as JSON); its id."""
    return int(
        await conn.fetchval(
            """INSERT INTO meter_replacements
                   (old_meter_id, new_meter_id, replaced_at, final_kwh, initial_kwh, operator)
               VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6) RETURNING id""",
            old_id,
            new_id,
            at,
            final,
            initial,
            operator,
        )
    )


async def retire_meter(conn: asyncpg.Connection, meter_id: int) -> None:
    """A replaced meter leaves the polling inventory (its assignment ends with the replacement)."""
    await conn.execute("UPDATE meters SET enabled = false WHERE id = $1", meter_id)


async def ledger_entry(conn: asyncpg.Connection, idempotency_key: str) -> asyncpg.Record | None:
    """``account`` (number) and ``amount`` of the ledger entry stored under ``idempotency_key``."""
    return await row(
        conn,
        """SELECT a.number AS account, l.amount FROM ledger l JOIN accounts a ON a.id = l.account_id
           WHERE l.idempotency_key = $1""",
        idempotency_key,
    )
