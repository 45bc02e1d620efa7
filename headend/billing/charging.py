"""Bill consumption from stored energy-register readings: prepaid balances go down, postpaid get bills."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg

from headend.billing.consumption import RegisterReading, register_delta
from headend.billing.tariff import Price, charge

ROLLOVER_AT = Decimal("1000000")  # 6 integer digits of a DL/T 645 energy register
REGISTER_QUANTITY = {
    "total": "energy_import_kwh",
    **{f"t{n}": f"energy_import_t{n}_kwh" for n in range(1, 5)},
}
_KWH = Decimal("0.01")


class BillingError(ValueError):
    """A period cannot be billed yet (missing readings); nothing was charged."""


async def _register_value(
    conn: asyncpg.Connection, meter_id: int, quantity: str, at: datetime
) -> Decimal | None:
    value = await conn.fetchval(
        """SELECT r.value FROM readings r JOIN quantities q ON q.id = r.quantity_id
           WHERE r.meter_id = $1 AND q.name = $2 AND r.ts <= $3 AND r.value IS NOT NULL
           ORDER BY r.ts DESC LIMIT 1""",
        meter_id,
        quantity,
        at,
    )
    return None if value is None else Decimal(repr(value)).quantize(_KWH)


def _swap_value(swap: asyncpg.Record, column: str, quantity: str) -> Decimal:
    values = json.loads(swap[column]) if isinstance(swap[column], str) else swap[column]
    if quantity not in values:
        raise BillingError(
            f"replacement of meter {swap['old_meter_id']}: no {quantity} in {column}; not billed"
        )
    return Decimal(str(values[quantity])).quantize(_KWH)


async def _meter_delta(
    conn: asyncpg.Connection,
    meter_id: int,
    quantity: str,
    start: datetime | None,
    end: datetime | None,
    known: Decimal | None = None,
) -> Decimal:
    """Register advance of one meter from ``start`` to ``end``; ``known`` stands for the missing end."""
    before = known if start is None else await _register_value(conn, meter_id, quantity, start)
    after = known if end is None else await _register_value(conn, meter_id, quantity, end)
    if before is None or after is None:
        at = start if before is None else end
        raise BillingError(
            f"meter {meter_id}: no {quantity} reading at or before "
            f"{at.isoformat() if at else '?'}; not billed"
        )
    serial = str(meter_id)
    return register_delta(
        RegisterReading(serial, before), RegisterReading(serial, after), rollover_at=ROLLOVER_AT
    )


async def bill_account(
    conn: asyncpg.Connection, account_id: int, start: datetime, end: datetime, *, due_days: int = 15
) -> Decimal:
    """Charge the consumption of ``account_id`` between ``start`` and ``end`` (once per period).

    Consumption is register(end) - register(start) per tariff register, rollover included, times the
    meter multiplier; across a meter replacement in the period, the old meter's final reading closes
    its part and the new meter's initial reading opens the other.
    Prepaid: a ledger charge lowers the balance. Postpaid: a bill due ``due_days`` later.
    """
    acc = await conn.fetchrow("SELECT kind, tariff_id FROM accounts WHERE id = $1", account_id)
    prices = [
        Price(r["register"], r["price"], r["effective_from"])
        for r in await conn.fetch(
            "SELECT register, price, effective_from FROM tariff_prices WHERE tariff_id = $1", acc["tariff_id"]
        )
    ]
    usage: dict[str, Decimal] = {}
    meters = await conn.fetch("SELECT id, multiplier FROM meters WHERE account_id = $1", account_id)
    swaps = {
        r["new_meter_id"]: r
        for r in await conn.fetch(
            """SELECT r.new_meter_id, r.old_meter_id, r.replaced_at, r.final_kwh, r.initial_kwh,
                  m.multiplier AS old_multiplier
           FROM meter_replacements r JOIN meters m ON m.id = r.old_meter_id
           WHERE r.new_meter_id = ANY($1::int[]) AND r.replaced_at > $2 AND r.replaced_at <= $3""",
            [m["id"] for m in meters],
            start,
            end,
        )
    }
    for meter in meters:
        swap = swaps.get(meter["id"])
        for register in {p.register for p in prices}:
            quantity = REGISTER_QUANTITY[register]
            if swap is None:
                delta = await _meter_delta(conn, meter["id"], quantity, start, end)
                used = delta * meter["multiplier"]
            else:  # replaced within the period: old meter up to its final reading, new one from its initial
                final = _swap_value(swap, "final_kwh", quantity)
                initial = _swap_value(swap, "initial_kwh", quantity)
                old_part = await _meter_delta(conn, swap["old_meter_id"], quantity, start, None, final)
                new_part = await _meter_delta(conn, meter["id"], quantity, None, end, initial)
                used = old_part * swap["old_multiplier"] + new_part * meter["multiplier"]
            usage[register] = usage.get(register, Decimal(0)) + used
    amount = charge(prices, usage, end)
    kwh = sum(usage.values(), Decimal(0))
    async with conn.transaction():
        if acc["kind"] == "postpaid":
            await conn.execute(
                """INSERT INTO bills (account_id, period_start, period_end, consumption, amount, due_at)
                   VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account_id, period_start) DO NOTHING""",
                account_id,
                start,
                end,
                kwh,
                amount,
                end + timedelta(days=due_days),
            )
            return amount
        charged = await conn.fetchval(
            """INSERT INTO ledger (account_id, kind, amount, period_start, period_end, idempotency_key,
                                  details)
               VALUES ($1, 'charge', $2, $3, $4, $5, jsonb_build_object('kwh', $6::text))
               ON CONFLICT (idempotency_key) DO NOTHING RETURNING id""",
            account_id,
            -amount,
            start,
            end,
            f"charge:{account_id}:{start.isoformat()}",
            str(kwh),
        )
        if charged is not None:
            await conn.execute(
                """INSERT INTO balances (account_id, balance, billed_until) VALUES ($1, $2, $3)
                   ON CONFLICT (account_id) DO UPDATE SET balance = balances.balance + EXCLUDED.balance,
                   billed_until = EXCLUDED.billed_until, updated_at = now()""",
                account_id,
                -amount,
                end,
            )
    return amount
