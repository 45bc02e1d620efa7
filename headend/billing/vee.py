"""Validation of energy registers before billing (VEE): rollover, impossible jumps, holds, resolutions.

Each pass validates what was stored since the last one, per meter and register, with one query for the
new readings, one update marking the suspect ones and one upsert of the watermarks. A suspect reading
opens a hold on the register; billing and automatic disconnection of the meter's account wait until an
operator accepts the data, records a replacement or corrects it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg

from headend.register_limits import MeterLimits, is_rollover, limits_of
from headend.store import vee as store
from headend.store.audit import audit

RESOLUTIONS = ("accepted", "replaced", "corrected")


class HoldError(ValueError):
    """A hold cannot be resolved as asked; the message says why."""


@dataclass
class ValidationReport:
    """What one pass looked at and found."""

    readings: int = 0
    suspect: int = 0
    holds: list[tuple[int, str]] = field(default_factory=list)  # (meter id, reason) opened this pass


def verdict(
    limits: MeterLimits, last_ts: datetime, last: float, ts: datetime, value: float
) -> tuple[str, str] | None:
    """``(rule, reason)`` when ``value`` at ``ts`` cannot follow ``last`` at ``last_ts``, else None."""
    before, after = Decimal(repr(last)), Decimal(repr(value))
    allowed = limits.max_advance(ts - last_ts)
    if after < before:
        if is_rollover(before, after, limits.rollover_at, allowed):
            return None
        return (
            "decrease",
            f"register decreased {before} -> {after} at {ts.isoformat()}: not a rollover "
            f"({'no wrap width' if limits.rollover_at is None else 'previous value not near the top'}); "
            "meter replaced or faulty?",
        )
    if after - before > allowed:
        return (
            "jump",
            f"register advanced {after - before} kWh in {ts - last_ts}, more than the meter's rating "
            f"allows ({allowed:.2f} kWh)",
        )
    return None


async def validate_new(conn: asyncpg.Connection) -> ValidationReport:
    """Validate every energy reading stored since the last pass; marks suspects and opens holds (one
    pass at a time: concurrent passes wait for each other)."""
    async with conn.transaction():
        await store.lock_validation(conn)
        return await _validate_new(conn)


async def _validate_new(conn: asyncpg.Connection) -> ValidationReport:
    report = ValidationReport()
    registers = {(r["meter_id"], r["quantity_id"]): r for r in await store.meters_to_validate(conn)}
    readings = await store.new_readings(conn)
    if not readings:
        return report
    suspects: list[tuple[int, int, datetime]] = []
    states: list[tuple[int, int, datetime, datetime, float]] = []
    holds: list[tuple[int, int, str, str, datetime, float | None, float]] = []
    index = 0
    while index < len(readings):
        key = (readings[index]["meter_id"], readings[index]["quantity_id"])
        end = index
        while end < len(readings) and (readings[end]["meter_id"], readings[end]["quantity_id"]) == key:
            end += 1
        reg = registers[key]
        limits = limits_of(reg["protocol"], reg["settings"])
        held = bool(reg["held"])
        last_ts, last = reg["last_ts"], reg["last_value"]
        for row in readings[index:end]:
            ts, value = row["ts"], row["value"]
            found = None if held or last is None else verdict(limits, last_ts, last, ts, value)
            if held or found is not None:
                suspects.append((key[0], key[1], ts))
                if found is not None:
                    holds.append((key[0], key[1], found[0], found[1], ts, last, value))
                    held = True
                continue
            last_ts, last = ts, value
        report.readings += end - index
        if last is not None:
            states.append((key[0], key[1], readings[end - 1]["ts"], last_ts, last))
        index = end
    async with conn.transaction():
        if suspects:
            await store.mark_suspect(conn, suspects)
        await store.save_states(conn, states)
        for meter_id, quantity_id, rule, reason, ts, previous, value in holds:
            if await store.open_hold(conn, meter_id, quantity_id, rule, reason, ts, previous, value):
                await audit(conn, "system", "vee.hold", "meter", meter_id, reason, {"rule": rule})
                report.holds.append((meter_id, reason))
    report.suspect = len(suspects)
    return report


async def resolve_hold(
    conn: asyncpg.Connection,
    hold_id: int,
    resolution: str,
    *,
    operator: str,
    reason: str,
    final: float | None = None,
    initial: float | None = None,
    corrected: float | None = None,
) -> None:
    """Resolve a hold (audited): ``accepted`` (the readings are real consumption), ``replaced`` (the meter
    was swapped under the same inventory row at the first suspect reading: billing splits there at the
    old register's ``final``, default its last valid value, and the new one's ``initial``, default the
    first suspect reading) or ``corrected`` (the first suspect reading becomes ``corrected``, estimated)."""
    if resolution not in RESOLUTIONS:
        raise HoldError(f"resolution must be one of {', '.join(RESOLUTIONS)}")
    if not operator.strip() or not reason.strip():
        raise HoldError("resolving a hold needs an operator and a reason")
    async with conn.transaction():
        hold = await store.hold_by_id(conn, hold_id)
        if hold is None or hold["resolved_at"] is not None:
            raise HoldError(f"no open hold {hold_id}")
        meter_id, quantity_id, first_ts = hold["meter_id"], hold["quantity_id"], hold["first_ts"]
        if hold["rule"] == "identity":  # the held data starts after the last reading of the old device
            first_ts = await store.first_suspect_after(conn, meter_id, quantity_id, first_ts)
            await store.adopt_identity(conn, meter_id)
            if first_ts is None:
                if resolution != "accepted":
                    raise HoldError(f"hold {hold_id}: no reading from the new device yet; resolve it later")
                await store.close_hold(conn, hold_id, resolution, operator, reason)
                await audit(conn, operator, "vee.accepted", "meter", meter_id, reason, {"hold": hold_id})
                return
        if resolution == "accepted" and hold["rule"] == "decrease":
            raise HoldError(
                f"hold {hold_id}: a decrease is not consumption; record the replacement or a correction"
            )
        if resolution == "corrected":
            if corrected is None:
                raise HoldError("a correction needs the corrected register value")
            await store.correct_reading(conn, meter_id, quantity_id, first_ts, corrected)
            await store.release_suspects(conn, meter_id, quantity_id, first_ts)
            await store.rewind(conn, meter_id, quantity_id)
        else:
            value = await store.reading_at(conn, meter_id, quantity_id, first_ts)
            if value is None:
                raise HoldError(f"hold {hold_id}: the suspect reading is gone")
            if resolution == "replaced":
                old = final if final is not None else hold["previous_value"]
                if old is None:
                    raise HoldError(f"hold {hold_id}: give the old register's final value")
                new = initial if initial is not None else value
                await store.add_restart(conn, meter_id, quantity_id, first_ts, old, new, hold_id, operator)
            await store.release_suspects(conn, meter_id, quantity_id, first_ts)
            await store.set_baseline(conn, meter_id, quantity_id, first_ts, value)
        await store.close_hold(conn, hold_id, resolution, operator, reason)
        await audit(
            conn,
            operator,
            f"vee.{resolution}",
            "meter",
            meter_id,
            reason,
            {"hold": hold_id, "final": final, "initial": initial, "corrected": corrected},
        )


async def keep_hold(conn: asyncpg.Connection, hold_id: int, *, operator: str, note: str) -> None:
    """Keep a hold open with a note saying why (audited as ``vee.noted``): billing and automatic
    disconnection of the register still wait for its resolution."""
    if not operator.strip() or not note.strip():
        raise HoldError("keeping a hold needs an operator and a note")
    if len(note.strip()) > 500:
        raise HoldError("a note is at most 500 characters")
    async with conn.transaction():
        hold = await store.hold_by_id(conn, hold_id)
        if hold is None or hold["resolved_at"] is not None:
            raise HoldError(f"no open hold {hold_id}")
        await store.add_note(conn, hold_id, operator, note.strip())
        await audit(conn, operator, "vee.noted", "meter", hold["meter_id"], note.strip(), {"hold": hold_id})


async def check_identities(
    conn: asyncpg.Connection, read_number: Callable[[int], Awaitable[str]], now: datetime, every: timedelta
) -> list[tuple[int, str]]:
    """Read the meter number of every DL/T 645-2007 meter not checked within ``every``; a different
    number than the one recorded opens an ``identity`` hold (another device answers at this address).
    A meter that does not answer is tried again on the next pass. Returns the holds opened."""
    opened = []
    for meter in await store.identities_due(conn, now - every):
        register = await store.energy_register(conn, meter["id"])
        if register is None or register["last_ts"] is None:
            continue  # nothing validated yet: the first check waits for the first reading
        try:
            number = str(await read_number(meter["id"]))
        except Exception:  # an unreachable meter is checked again next time; reads count its failures
            continue
        async with conn.transaction():
            # compared with the identity as it is now (locked): an operator who resolved a hold while
            # the meter was read has recorded the new number, which is then no change
            recorded = await store.current_identity(conn, meter["id"])
            if recorded is None or number == recorded:
                await store.save_identity(conn, meter["id"], number, None, now)
                continue
            reason = f"meter number changed {recorded} -> {number}: meter replaced?"
            await store.save_identity(conn, meter["id"], recorded, number, now)
            hold = await store.open_hold(
                conn,
                meter["id"],
                register["quantity_id"],
                "identity",
                reason,
                register["last_ts"],
                register["last_value"],
                None,
            )
            if hold is not None:
                await audit(conn, "system", "vee.hold", "meter", meter["id"], reason, {"rule": "identity"})
                opened.append((meter["id"], reason))
    return opened
