"""The rows of the readings export (``headend export readings``): per meter and local day, the
register at the day's opening midnight (its daily freeze) and the day's consumption to the next, both
multiplied by the meter's factor, with quality flags; or every interval reading, multiplied. Merged in
one pass over readings streamed in meter then time order, so memory does not grow with the period."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from headend.store.export import ExportMeter, readings_between, registers_at

DAILY_COLUMNS = (
    "meter",
    "address",
    "day",
    "multiplier",
    "register_kwh",
    "register_quality",
    "consumption_kwh",
    "consumption_quality",
)
INTERVAL_COLUMNS = ("meter", "address", "ts", "multiplier", "value_kwh", "quality")
FLAGGED = ("estimated", "suspect")
Row = tuple[object, ...]
Progress = Callable[[int], None]  # called with how many meters are done


def kwh(value: float | None) -> float | None:
    """A register × factor as exported: rounded to 6 decimals (registers × multipliers carry no more)."""
    return None if value is None else round(value, 6)


def _consumption_quality(start: tuple[float, str] | None, end: tuple[float, str] | None) -> str:
    if start is None or end is None:
        return "missing"
    flagged = [q for _v, q in (start, end) if q in FLAGGED]
    return flagged[0] if flagged else "valid"


def _midnights(first: date, days: int, zone: ZoneInfo) -> list[datetime]:
    return [datetime.combine(first + timedelta(days=n), time(0), zone) for n in range(days + 1)]


async def daily_rows(
    conn: asyncpg.Connection,
    meters: Sequence[ExportMeter],
    quantity: int,
    first: date,
    last: date,
    zone: ZoneInfo,
    progress: Progress,
) -> AsyncIterator[Row]:
    """One row per meter (in ``meters`` order, by id) and day ``first`` … ``last``."""
    days = (last - first).days + 1
    midnights = _midnights(first, days, zone)
    index = {m: n for n, m in enumerate(midnights)}
    registers = registers_at(conn, [m.id for m in meters], quantity, midnights)
    pending: asyncpg.Record | None = None
    for done, meter in enumerate(meters):
        stored: dict[int, tuple[float, str]] = {}
        while True:
            if pending is None:
                pending = await anext(registers, None)
                if pending is None:
                    break
            if pending["meter_id"] > meter.id:
                break
            if pending["meter_id"] == meter.id and pending["value"] is not None:
                stored[index[pending["ts"]]] = (pending["value"], pending["quality"])
            pending = None
        for n in range(days):
            start, end = stored.get(n), stored.get(n + 1)
            consumption = None if start is None or end is None else (end[0] - start[0]) * meter.factor
            yield (
                meter.name,
                meter.address,
                first + timedelta(days=n),
                meter.factor,
                None if start is None else kwh(start[0] * meter.factor),
                "missing" if start is None else start[1],
                kwh(consumption),
                _consumption_quality(start, end),
            )
        progress(done + 1)


async def interval_rows(
    conn: asyncpg.Connection,
    meters: Sequence[ExportMeter],
    quantity: int,
    first: date,
    last: date,
    zone: ZoneInfo,
    progress: Progress,
) -> AsyncIterator[Row]:
    """Every stored reading of ``meters`` in the local days ``first`` … ``last``, × the factor."""
    start, end = _midnights(first, (last - first).days + 1, zone)[:: (last - first).days + 1]
    chosen = {m.id: (n, m) for n, m in enumerate(meters)}
    shown = 0
    async for row in readings_between(conn, [m.id for m in meters], quantity, start, end):
        found = chosen.get(row["meter_id"])
        if found is None:
            continue
        n, meter = found
        if n > shown:
            progress(n)
            shown = n
        yield interval_row(meter, row, zone)
    progress(len(meters))


def interval_row(meter: ExportMeter, row: asyncpg.Record, zone: ZoneInfo) -> Row:
    """One stored reading as an ``INTERVAL_COLUMNS`` row: its local time, × the meter's factor."""
    value = row["value"]
    return (
        meter.name,
        meter.address,
        row["ts"].astimezone(zone).isoformat(),
        meter.factor,
        None if value is None else kwh(value * meter.factor),
        row["quality"],
    )
