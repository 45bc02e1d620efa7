"""A simulated meter's time-of-use schedule: two sets of season and daily tables and the switch.

The meter keeps a first and a second set (DL/T 645-2007 ``04 01 …`` / ``04 02 …``) of a season table
and daily tables 1..8; status word 3 bit 5 / bit 0 say which set's season / daily tables run. When
its clock passes a switch time (``04 00 01 06`` seasons, ``04 00 01 07`` daily tables) the meter runs
the other set from then on and clears that switch time. Holidays (``04 03 00 nn``, the first n of them)
come first, then rest days (``04 00 08 01`` bit 0 Sunday … 6 Saturday, 0 = rest; ``04 00 08 02`` their
table), then the season. The tariff at a time is the last switch point of the day's table at or
before it, among the first m points (a season before the first start is the last season). Values
are the codec's (``protocols.dlt645.tou``). Every item can be read and written (password-checked by
the responder); a write that breaks the counts' limits is refused with the error word's count bits.
"""

from __future__ import annotations

import bisect
from datetime import date, datetime
from typing import Any

from protocols.dlt645.tou import MAX_DAILY_TABLES, MAX_HOLIDAYS, MAX_SEASONS, MAX_SLOTS

# The factory schedule: the tariff of each hour (1 sharp, 2 peak, 3 flat, 4 valley), one season.
TOU_BY_HOUR = [4, 4, 4, 4, 4, 4, 4, 3, 2, 2, 2, 1, 3, 3, 3, 3, 3, 2, 2, 1, 1, 2, 3, 4]
METER_REGISTERS = 4
SEASON_SWITCH, TABLE_SWITCH = "04000106", "04000107"
COUNTS = {"04000201": "seasons", "04000202": "tables", "04000203": "slots", "04000204": "tariffs"}
LIMITS = {"seasons": MAX_SEASONS, "tables": MAX_DAILY_TABLES, "slots": MAX_SLOTS, "tariffs": 63}
LIMIT_FLAGS = {"seasons": "year_zones", "tables": "day_slots", "slots": "day_slots", "tariffs": "tariffs"}


class TouRefused(Exception):
    """A write the meter refuses; ``flag`` is the error-word bit (codec name)."""

    def __init__(self, flag: str) -> None:
        super().__init__(flag)
        self.flag = flag


def _factory_table() -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    for hour, tariff in enumerate(TOU_BY_HOUR):
        if not points or points[-1]["tariff"] != tariff:
            points.append({"start": f"{hour:02d}:00", "tariff": tariff})
    return points


def _minutes(text: str) -> int:
    hour, minute = text.split(":")
    return int(hour) * 60 + int(minute)


def _month_day(text: str) -> tuple[int, int]:
    month, day = text.split("-")
    return int(month), int(day)


class MeterTou:
    """Both sets, the switch times, holidays, rest days and the counts (see the module docstring)."""

    def __init__(self) -> None:
        factory = _factory_table()
        self.season_tables: dict[int, list[dict[str, Any]]] = {
            1: [{"start": "01-01", "table": 1}],
            2: [{"start": "01-01", "table": 1}],
        }
        self.daily_tables: dict[tuple[int, int], list[dict[str, Any]]] = {
            (s, n): list(factory) for s in (1, 2) for n in range(1, MAX_DAILY_TABLES + 1)
        }
        self.active_seasons = 1  # which set's season table runs (status word 3 bit 5: 0 first, 1 second)
        self.active_tables = 1  # which set's daily tables run (status word 3 bit 0)
        self.switch: dict[str, datetime | None] = {SEASON_SWITCH: None, TABLE_SWITCH: None}
        self.counts = {"seasons": 1, "tables": 1, "slots": len(factory), "tariffs": METER_REGISTERS}
        self.holiday_count = 0
        self.holidays: dict[int, dict[str, Any]] = {}
        self.rest_word = 0x7F  # every day a working day
        self.rest_table = 1
        self._days: dict[date, tuple[list[int], list[int]]] = {}  # day -> (starts, tariffs), cached

    # -- the schedule ---------------------------------------------------------------------------

    def advance_to(self, local: datetime) -> None:
        """Run the other set from each switch time the meter's clock has passed (and clear it)."""
        for di, when in self.switch.items():
            if when is not None and local >= when:
                if di == SEASON_SWITCH:
                    self.active_seasons = 3 - self.active_seasons
                else:
                    self.active_tables = 3 - self.active_tables
                self.switch[di] = None
                self._days.clear()

    def run_set(self, number: int) -> None:
        """Run set ``number`` (1 or 2) from now on, as if the meter had switched to it."""
        self.active_seasons = self.active_tables = number
        self._days.clear()

    def tariff_at(self, local: datetime) -> int:
        """The tariff register (1..4) energy goes to at the meter's local time ``local``."""
        if self.switch[SEASON_SWITCH] is not None or self.switch[TABLE_SWITCH] is not None:
            self.advance_to(local)
        day = local.date()
        cached = self._days.get(day)
        if cached is None:
            cached = self._day(day)
            if len(self._days) > 400:
                self._days.clear()
            self._days[day] = cached
        starts, tariffs = cached
        index = bisect.bisect_right(starts, local.hour * 60 + local.minute) - 1
        return min(max(tariffs[max(index, 0)], 1), METER_REGISTERS)

    def _day(self, day: date) -> tuple[list[int], list[int]]:
        table = self._table_of(day)
        points = self.daily_tables[(self.active_tables, table)]
        points = sorted(points[: max(self.counts["slots"], 1)], key=lambda p: _minutes(p["start"]))
        return [_minutes(p["start"]) for p in points], [int(p["tariff"]) for p in points]

    def _table_of(self, day: date) -> int:
        for number in range(1, self.holiday_count + 1):
            holiday = self.holidays.get(number)
            if holiday is not None and holiday["date"] == day:
                return int(holiday["table"])
        if not self.rest_word >> (day.isoweekday() % 7) & 1:
            return self.rest_table
        seasons = self.season_tables[self.active_seasons][: max(self.counts["seasons"], 1)]
        ordered = sorted(seasons, key=lambda s: _month_day(s["start"]))
        today = (day.month, day.day)
        table = int(ordered[-1]["table"])  # before the first start: the last season (over the new year)
        for season in ordered:
            if _month_day(season["start"]) <= today:
                table = int(season["table"])
        return table if 1 <= table <= MAX_DAILY_TABLES else 1

    # -- the DL/T 645 items ---------------------------------------------------------------------

    def owns(self, di: str) -> bool:
        """Whether ``di`` is one of the time-of-use items."""
        return (
            di in self.switch
            or di in COUNTS
            or di in ("04000205", "04000801", "04000802")
            or (di[:4] in ("0401", "0402") and di[4:6] == "00" and int(di[6:], 16) <= MAX_DAILY_TABLES)
            or (di[:6] == "040300" and 1 <= int(di[6:], 16) <= MAX_HOLIDAYS)
        )

    def read(self, di: str) -> Any:
        """The value of a time-of-use item (None: a holiday never written)."""
        if di in self.switch:
            return self.switch[di]
        if di in COUNTS:
            return self.counts[COUNTS[di]]
        if di == "04000205":
            return self.holiday_count
        if di == "04000801":
            return self.rest_word
        if di == "04000802":
            return self.rest_table
        if di[:6] == "040300":
            return self.holidays.get(int(di[6:], 16))
        set_number, table = int(di[2:4], 16), int(di[6:], 16)
        if table == 0:
            return self.season_tables[set_number]
        return self.daily_tables[(set_number, table)]

    def write(self, di: str, value: Any) -> None:
        """Store a written item; raises :class:`TouRefused` for counts beyond the meter's limits."""
        self._days.clear()
        if di in self.switch:
            self.switch[di] = value
        elif di in COUNTS:
            name = COUNTS[di]
            if not 1 <= int(value) <= LIMITS[name]:
                raise TouRefused(LIMIT_FLAGS[name])
            self.counts[name] = int(value)
        elif di == "04000205":
            if not 0 <= int(value) <= MAX_HOLIDAYS:
                raise TouRefused("other")
            self.holiday_count = int(value)
        elif di == "04000801":
            self.rest_word = int(value["raw"] if isinstance(value, dict) else value) & 0x7F
        elif di == "04000802":
            self.rest_table = int(value)
        elif di[:6] == "040300":
            self.holidays[int(di[6:], 16)] = value
        else:
            set_number, table = int(di[2:4], 16), int(di[6:], 16)
            if table == 0:
                self.season_tables[set_number] = list(value)
            else:
                self.daily_tables[(set_number, table)] = list(value)
