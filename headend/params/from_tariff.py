"""The parameter set a time-of-use tariff implies, so that billing and meters share one truth.

Each distinct price of the tariff's slots becomes a tariff register, dearest first (t1 sharp, t2 peak,
t3 flat, t4 valley on State Grid meters); each distinct day (which register each minute goes to)
becomes a daily table, and each run of days with the same table a season. A tariff whose slots
need more than the meter holds (4 registers, 8 daily tables, 14 switch points a day, 14 seasons)
is refused with the reason.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal

from headend.billing.tariff import Slot, TariffError, slot_price
from headend.params.tou import ParamError, Season, SwitchPoint, TouSet
from protocols.dlt645.tou import MAX_DAILY_TABLES, MAX_SEASONS, MAX_SLOTS

METER_TARIFFS = 4
LEAP_YEAR = [date(2024, 1, 1) + timedelta(days=n) for n in range(366)]


def _day_points(slots: list[Slot], day: date, registers: dict[Decimal, int]) -> tuple[SwitchPoint, ...]:
    """The switch points of one day: the register of each minute, where it changes."""
    points: list[SwitchPoint] = []
    for minute in range(1440):
        moment = datetime.combine(day, time(minute // 60, minute % 60))
        register = registers[slot_price(slots, moment)]
        if not points or points[-1].tariff != register:
            points.append(SwitchPoint(f"{minute // 60:02d}:{minute % 60:02d}", register))
    return tuple(points)


def set_from_slots(slots: list[Slot]) -> TouSet:
    """The :class:`TouSet` whose registers follow ``slots`` (see the module docstring)."""
    if not slots:
        raise ParamError("the tariff has no time-of-use slots: its registers follow the meter's own schedule")
    prices = sorted({s.price for s in slots}, reverse=True)
    if len(prices) > METER_TARIFFS:
        raise ParamError(
            f"the tariff has {len(prices)} prices; a meter has {METER_TARIFFS} tariff registers (t1..t4)"
        )
    registers = {price: n for n, price in enumerate(prices, start=1)}
    # days with the same slots in season have the same switch points: compute each kind once
    by_kind: dict[tuple[bool, ...], tuple[SwitchPoint, ...]] = {}
    tables: list[tuple[SwitchPoint, ...]] = []
    day_table: list[int] = []
    try:
        for day in LEAP_YEAR:
            moment = datetime.combine(day, time())
            kind = tuple(_in_season(s, moment) for s in slots)
            if kind not in by_kind:
                by_kind[kind] = _day_points(slots, day, registers)
            points = by_kind[kind]
            if points not in tables:
                tables.append(points)
            day_table.append(tables.index(points) + 1)
    except TariffError as exc:
        raise ParamError(str(exc)) from None
    if len(tables) > MAX_DAILY_TABLES:
        raise ParamError(f"the tariff needs {len(tables)} daily tables; a meter holds {MAX_DAILY_TABLES}")
    longest = max(len(t) for t in tables)
    if longest > MAX_SLOTS:
        raise ParamError(f"the tariff has {longest} switch points a day; a meter holds {MAX_SLOTS}")
    seasons = [Season(f"{LEAP_YEAR[n]:%m-%d}", table) for n, table in enumerate(day_table)
               if n == 0 or day_table[n - 1] != table]  # fmt: skip
    if len(seasons) > 1 and seasons[-1].table == seasons[0].table:
        seasons = seasons[1:]  # the last season runs on over the new year: days before the first start
    if len(seasons) > MAX_SEASONS:
        raise ParamError(f"the tariff needs {len(seasons)} seasons; a meter holds {MAX_SEASONS}")
    return TouSet(tuple(seasons), tuple(tables), tariffs=len(prices))


def _in_season(slot: Slot, moment: datetime) -> bool:
    if slot.season is None:
        return True
    start, end = slot.season
    day = (moment.month, moment.day)
    return start <= day <= end if start <= end else day >= start or day <= end
