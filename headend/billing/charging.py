"""Bill consumption from validated energy-register readings: prepaid balances go down, postpaid get bills."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from itertools import pairwise
from zoneinfo import ZoneInfo

import asyncpg

from headend.billing.consumption import ConsumptionError, RegisterReading, register_delta
from headend.billing.settlement import settle_bills
from headend.billing.tariff import (
    Price,
    Slot,
    TariffError,
    blocks_from,
    charge,
    slot_price,
    slots_from,
    tiered_charge,
)
from headend.register_limits import MeterLimits, limits_of
from headend.store import billing as store
from headend.store import tariffs
from headend.store.vee import held_meters, restarts_between

REGISTER_QUANTITY = {
    "total": "energy_import_kwh",
    **{f"t{n}": f"energy_import_t{n}_kwh" for n in range(1, 5)},
}
_KWH = Decimal("0.01")
Point = tuple[datetime, Decimal]  # a register value and when it was read


class BillingError(ValueError):
    """A period cannot be billed yet (missing readings, held meter); nothing was charged."""


def _kwh(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(_KWH)


async def _value(conn: asyncpg.Connection, meter_id: int, quantity: str, at: datetime) -> Point:
    row = await store.register_value(conn, meter_id, quantity, at)
    if row is None:
        raise BillingError(
            f"meter {meter_id}: no valid {quantity} reading at or before {at.isoformat()}; not billed"
        )
    return row["ts"], _kwh(row["value"])


def _swap_value(swap: asyncpg.Record, column: str, quantity: str) -> Decimal:
    values = json.loads(swap[column]) if isinstance(swap[column], str) else swap[column]
    if quantity not in values:
        raise BillingError(
            f"replacement of meter {swap['old_meter_id']}: no {quantity} in {column}; not billed"
        )
    return Decimal(str(values[quantity])).quantize(_KWH)


def _advance(meter_id: int, limits: MeterLimits, before: Point, after: Point) -> Decimal:
    serial = str(meter_id)
    try:
        return register_delta(
            RegisterReading(serial, before[1]),
            RegisterReading(serial, after[1]),
            rollover_at=limits.rollover_at,
            max_advance=limits.max_advance(after[0] - before[0]),
        )
    except ConsumptionError as exc:
        raise BillingError(f"meter {meter_id}: {exc}; not billed") from None


async def _meter_delta(
    conn: asyncpg.Connection,
    meter_id: int,
    limits: MeterLimits,
    quantity: str,
    start: datetime | Point,
    end: datetime | Point,
) -> Decimal:
    """Register advance of one meter from ``start`` to ``end`` (a time, or a known (time, value) such
    as a replacement's final or initial reading), split at in-place register restarts."""
    first = start if isinstance(start, tuple) else await _value(conn, meter_id, quantity, start)
    last = end if isinstance(end, tuple) else await _value(conn, meter_id, quantity, end)
    total = Decimal(0)
    cursor = first
    for restart in await restarts_between(conn, meter_id, quantity, first[0], last[0]):
        total += _advance(meter_id, limits, cursor, (restart["at"], _kwh(restart["final_value"])))
        cursor = (restart["at"], _kwh(restart["initial_value"]))
    return total + _advance(meter_id, limits, cursor, last)


async def usage_of(
    conn: asyncpg.Connection, account_id: int, registers: set[str], start: datetime, end: datetime
) -> dict[str, Decimal]:
    """kWh per tariff register the account used in ``[start, end]``: each meter for the part of the
    period it was assigned to the account, times its multiplier; across a recorded replacement the old
    meter's final reading closes its part and the new meter's initial reading opens the other."""
    meters = await store.assigned_meters(conn, account_id, start, end)
    held = await held_meters(conn, [m["id"] for m in meters])
    if held:
        meter_id, reason = next(iter(held.items()))
        raise BillingError(f"held: meter {meter_id} has unresolved suspect data ({reason}); not billed")
    ids = [m["id"] for m in meters]
    swaps = {r["new_meter_id"]: r for r in await store.swaps_into(conn, ids, start, end)}
    edges = await store.replacements_of(conn, ids, start, end)
    usage: dict[str, Decimal] = {}
    for meter in meters:
        limits = limits_of(meter["protocol"], meter["settings"])
        lo, hi = meter["from_ts"], meter["to_ts"]
        swap = swaps.get(meter["id"]) if meter["from_ts"] == start else None
        # an assignment that starts (ends) at a replacement opens (closes) at its initial (final) reading
        came = next((r for r in edges if r["new_meter_id"] == meter["id"] and r["replaced_at"] == lo), None)
        went = next((r for r in edges if r["old_meter_id"] == meter["id"] and r["replaced_at"] == hi), None)
        for register in registers:
            quantity = REGISTER_QUANTITY[register]
            if swap is None:
                first: datetime | Point = (
                    lo if came is None else (lo, _swap_value(came, "initial_kwh", quantity))
                )
                last: datetime | Point = (
                    hi if went is None else (hi, _swap_value(went, "final_kwh", quantity))
                )
                used = (
                    await _meter_delta(conn, meter["id"], limits, quantity, first, last) * meter["multiplier"]
                )
            else:  # replaced within the period: old meter up to its final reading, new one from its initial
                old_limits = limits_of(swap["old_protocol"], swap["old_settings"])
                at = swap["replaced_at"]
                final = _swap_value(swap, "final_kwh", quantity)
                initial = _swap_value(swap, "initial_kwh", quantity)
                old_part = await _meter_delta(
                    conn, swap["old_meter_id"], old_limits, quantity, lo, (at, final)
                )
                new_part = await _meter_delta(conn, meter["id"], limits, quantity, (at, initial), hi)
                used = old_part * swap["old_multiplier"] + new_part * meter["multiplier"]
            usage[register] = usage.get(register, Decimal(0)) + used
    return usage


def _decoded(raw: object) -> dict[str, object]:
    return json.loads(raw) if isinstance(raw, str) else dict(raw or {})  # type: ignore[call-overload]


async def _price(
    conn: asyncpg.Connection, account_id: int, tariff_id: int, start: datetime, end: datetime
) -> tuple[Decimal, Decimal]:
    """(money, kWh) of the account's use in the period under its tariff, split where a revision of the
    tariff takes effect: each part at the prices, slots or blocks in force in it."""
    row = await tariffs.tariff(conn, tariff_id)
    revised = [
        (r["effective_from"], _decoded(r["definition"])) for r in await tariffs.revisions(conn, tariff_id)
    ]
    prices = [
        Price(r["register"], r["price"], r["effective_from"])
        for r in await store.tariff_prices(conn, tariff_id)
    ]
    cuts = {t for t, _ in revised} | {p.effective_from for p in prices}
    edges = [start, *sorted(t for t in cuts if start < t < end), end]
    money, used = Decimal(0), Decimal(0)
    earlier: list[tuple[datetime, Decimal]] = []  # (end, kWh) of the parts priced already
    for part_start, part_end in pairwise(edges):
        definition = _decoded(row["definition"])
        for since, revision in revised:
            if since <= part_start:
                definition = revision
        try:
            part_money, part_kwh = await _price_part(
                conn, account_id, row["kind"], definition, prices, part_start, part_end, earlier
            )
        except TariffError as exc:
            raise BillingError(f"account {account_id}: {exc}; not billed") from None
        earlier.append((part_end, part_kwh))
        money, used = money + part_money, used + part_kwh
    return money, used


async def _price_part(
    conn: asyncpg.Connection,
    account_id: int,
    kind: str,
    definition: dict[str, object],
    prices: list[Price],
    start: datetime,
    end: datetime,
    earlier: list[tuple[datetime, Decimal]],
) -> tuple[Decimal, Decimal]:
    """(money, kWh) of a part of a period in which one definition and one set of prices are in force:
    register prices (flat, or time of use by the meter's own tariff registers), monthly blocks (tiered,
    counting the kWh of ``earlier`` parts of this month), or head-end time-of-use slots weighted by the
    interval readings."""
    if kind == "tiered" or slots_from(definition):
        used = sum((await usage_of(conn, account_id, {"total"}, start, end)).values(), Decimal(0))
        zone = ZoneInfo(str(definition.get("timezone", "Asia/Shanghai")))
        if kind == "tiered":
            local_end = end.astimezone(zone)
            month = local_end.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            done = await tariffs.month_to_date_kwh(conn, account_id, month, start)
            done += sum((kwh for until, kwh in earlier if until > month), Decimal(0))
            return tiered_charge(blocks_from(definition), done, used), used
        return await _slot_charge(conn, account_id, slots_from(definition), zone, used, start, end), used
    usage = await usage_of(conn, account_id, {p.register for p in prices}, start, end)
    return charge(prices, usage, start), sum(usage.values(), Decimal(0))


async def _slot_charge(
    conn: asyncpg.Connection,
    account_id: int,
    slots: list[Slot],
    zone: ZoneInfo,
    used: Decimal,
    start: datetime,
    end: datetime,
) -> Decimal:
    """``used`` kWh priced by the slots, in the proportions the interval readings show (each interval
    at the price of its end's local time); the total is always the validated ``used``."""
    meters = [m["id"] for m in await store.assigned_meters(conn, account_id, start, end)]
    weighted, advance = Decimal(0), Decimal(0)
    previous: asyncpg.Record | None = None
    for row in await tariffs.interval_readings(conn, meters, start, end):
        if (
            previous is not None
            and previous["meter_id"] == row["meter_id"]
            and row["value"] > previous["value"]
        ):
            step = _kwh(row["value"]) - _kwh(previous["value"])
            weighted += step * slot_price(slots, row["ts"].astimezone(zone))
            advance += step
        previous = row
    rate = weighted / advance if advance else slot_price(slots, end.astimezone(zone))
    return (used * rate).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


async def bill_account(
    conn: asyncpg.Connection, account_id: int, start: datetime, end: datetime, *, due_days: int = 15
) -> Decimal:
    """Charge the consumption of ``account_id`` between ``start`` and ``end`` (once per period).

    Prepaid: a ledger charge lowers the balance. Postpaid: a bill due ``due_days`` later, charged to
    the ledger as well and settled at once from any credit. A held meter or a register decrease that
    is not a rollover charges nothing (``BillingError``)."""
    acc = await store.account_for_billing(conn, account_id)
    if acc is None or acc["tariff_id"] is None:
        raise BillingError(f"account {account_id} has no tariff; not billed")
    amount, kwh = await _price(conn, account_id, acc["tariff_id"], start, end)
    details = json.dumps({"kwh": str(kwh)})
    async with conn.transaction():
        if acc["kind"] == "postpaid":
            bill = await store.insert_bill(
                conn, account_id, start, end, kwh, amount, end + timedelta(days=due_days)
            )
            if bill is not None:
                await store.insert_ledger(
                    conn,
                    account_id,
                    "charge",
                    -amount,
                    f"bill:{bill}",
                    json.dumps({"kwh": str(kwh), "bill": bill}),
                    start,
                    end,
                )
                await store.add_to_balance(conn, account_id, -amount)
                await settle_bills(conn, account_id, end)
            return amount
        charged = await store.insert_ledger(
            conn,
            account_id,
            "charge",
            -amount,
            f"charge:{account_id}:{start.isoformat()}",
            details,
            start,
            end,
        )
        if charged is not None:
            await store.add_to_balance(conn, account_id, -amount, end)
    return amount
