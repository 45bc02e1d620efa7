"""Time-of-use parameter sets: seasons, daily tables, holidays and rest days, as data.

A :class:`TouSet` is what a meter's DL/T 645-2007 time-of-use items hold (docs/protocols.md):
``seasons`` (时区: a start MM-DD and the daily table used from then on), ``tables`` (日时段表: switch
points hh:mm and the tariff register from then on), ``holidays`` (公共假日: a date and its daily table),
``rest_days`` with ``rest_table`` (周休日) and ``tariffs`` (费率数). It is stored as JSON
(:meth:`TouSet.to_json` / :func:`parse_set`), turned into the meter items of a set
(:meth:`TouSet.meter_items`) and compared item by item (:func:`item_diff`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from protocols.dlt645.tou import (
    MAX_DAILY_TABLES,
    MAX_HOLIDAYS,
    MAX_SEASONS,
    MAX_SLOTS,
    WEEKDAYS,
    daily_table_di,
    holiday_di,
    season_table_di,
)

MAX_TARIFFS = 63
SEASON_COUNT, TABLE_COUNT, SLOT_COUNT, TARIFF_COUNT, HOLIDAY_COUNT = (
    "04000201",
    "04000202",
    "04000203",
    "04000204",
    "04000205",
)
REST_WORD, REST_TABLE = "04000801", "04000802"
SEASON_SWITCH, TABLE_SWITCH = "04000106", "04000107"


class ParamError(ValueError):
    """A parameter set that is not valid (one line, naming what is wrong)."""


@dataclass(frozen=True, slots=True)
class Season:
    """From ``start`` (MM-DD) on, days use daily table ``table``."""

    start: str
    table: int


@dataclass(frozen=True, slots=True)
class SwitchPoint:
    """From ``start`` (hh:mm) on, energy goes to tariff register ``tariff``."""

    start: str
    tariff: int


@dataclass(frozen=True, slots=True)
class Holiday:
    """On ``day`` the meter uses daily table ``table``."""

    day: dt.date
    table: int


@dataclass(frozen=True, slots=True)
class TouSet:
    """A time-of-use parameter set (see the module docstring)."""

    seasons: tuple[Season, ...]
    tables: tuple[tuple[SwitchPoint, ...], ...]
    holidays: tuple[Holiday, ...] = ()
    rest_days: frozenset[int] = field(default_factory=frozenset)  # 0 = Sunday … 6 = Saturday
    rest_table: int = 1
    tariffs: int = 4

    def counts(self) -> dict[str, int]:
        """p, q, m, k, n: the counts the meter keeps beside the tables."""
        return {
            "seasons": len(self.seasons),
            "daily_tables": len(self.tables),
            "slots_per_day": max(len(t) for t in self.tables),
            "tariffs": self.tariffs,
            "holidays": len(self.holidays),
        }

    def to_json(self) -> dict[str, Any]:
        """The stored form (what ``params set add --file`` reads)."""
        return {
            "seasons": [{"start": s.start, "table": s.table} for s in self.seasons],
            "daily_tables": [[{"start": p.start, "tariff": p.tariff} for p in t] for t in self.tables],
            "holidays": [{"date": h.day.isoformat(), "table": h.table} for h in self.holidays],
            "rest_days": [WEEKDAYS[d] for d in sorted(self.rest_days)],
            "rest_table": self.rest_table,
            "tariffs": self.tariffs,
        }

    def meter_items(self, set_number: int) -> dict[str, Any]:
        """DI -> value of every item written to the meter for this set as set 1 or 2 (codec values)."""
        counts = self.counts()
        items: dict[str, Any] = {
            SEASON_COUNT: counts["seasons"],
            TABLE_COUNT: counts["daily_tables"],
            SLOT_COUNT: counts["slots_per_day"],
            TARIFF_COUNT: counts["tariffs"],
            HOLIDAY_COUNT: counts["holidays"],
            REST_WORD: sum(1 << n for n in range(7) if n not in self.rest_days),  # 1 = working day
            REST_TABLE: self.rest_table,
            season_table_di(set_number): [{"start": s.start, "table": s.table} for s in self.seasons],
        }
        for number, table in enumerate(self.tables, start=1):
            items[daily_table_di(set_number, number)] = [
                {"start": p.start, "tariff": p.tariff} for p in table
            ]
        for number, holiday in enumerate(self.holidays, start=1):
            items[holiday_di(number)] = {"date": holiday.day, "table": holiday.table}
        return items


def _int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ParamError(f"{what} must be a whole number from {low} to {high}, got {value!r}")
    return value


def _list(value: object, what: str, low: int, high: int) -> list[Any]:
    if not isinstance(value, list) or not low <= len(value) <= high:
        raise ParamError(f"{what} must be a list of {low} to {high} entries")
    return value


def _entry(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise ParamError(f"{what} must be an object")
    return value


def _month_day(text: object, what: str) -> str:
    try:
        month, day = (int(part) for part in str(text).split("-"))
        dt.date(2024, month, day)  # a leap year: 02-29 is a day
    except ValueError:
        raise ParamError(f"{what} {text!r} is not MM-DD") from None
    return f"{month:02d}-{day:02d}"


def _hour_minute(text: object, what: str) -> str:
    try:
        moment = dt.time.fromisoformat(str(text))
    except ValueError:
        raise ParamError(f"{what} {text!r} is not hh:mm") from None
    if moment.second or len(str(text)) != 5:
        raise ParamError(f"{what} {text!r} is not hh:mm")
    return f"{moment.hour:02d}:{moment.minute:02d}"


def parse_set(data: object) -> TouSet:
    """A :class:`TouSet` from its stored JSON form; :class:`ParamError` names the first problem."""
    top = _entry(data, "a parameter set")
    unknown = sorted(set(top) - {"seasons", "daily_tables", "holidays", "rest_days", "rest_table", "tariffs"})
    if unknown:
        raise ParamError(f"unknown key {unknown[0]!r} in the parameter set")
    tables_raw = _list(top.get("daily_tables"), "daily_tables", 1, MAX_DAILY_TABLES)
    table_count = len(tables_raw)
    tariffs = _int(top.get("tariffs", 4), "tariffs", 1, MAX_TARIFFS)
    tables: list[tuple[SwitchPoint, ...]] = []
    for number, raw in enumerate(tables_raw, start=1):
        points = []
        for entry in _list(raw, f"daily table {number}", 1, MAX_SLOTS):
            item = _entry(entry, f"a switch point of daily table {number}")
            start = _hour_minute(item.get("start"), f"daily table {number}: start")
            tariff = _int(item.get("tariff"), f"daily table {number}: tariff", 1, tariffs)
            points.append(SwitchPoint(start, tariff))
        starts = [p.start for p in points]
        if starts != sorted(set(starts)) or starts[0] != "00:00":
            raise ParamError(f"daily table {number}: switch points start at 00:00 and go up, each once")
        tables.append(tuple(points))
    seasons = []
    for entry in _list(top.get("seasons"), "seasons", 1, MAX_SEASONS):
        item = _entry(entry, "a season")
        start = _month_day(item.get("start"), "season start")
        seasons.append(Season(start, _int(item.get("table"), f"season {start}: table", 1, table_count)))
    season_starts = [s.start for s in seasons]
    if season_starts != sorted(set(season_starts)):
        raise ParamError("seasons go up by start date, each start once")
    holidays = []
    for entry in _list(top.get("holidays", []), "holidays", 0, MAX_HOLIDAYS):
        item = _entry(entry, "a holiday")
        try:
            day = dt.date.fromisoformat(str(item.get("date")))
        except ValueError:
            raise ParamError(f"holiday date {item.get('date')!r} is not YYYY-MM-DD") from None
        if not 2000 <= day.year <= 2099:
            raise ParamError(f"holiday {day}: the meter keeps years 2000..2099")
        holidays.append(Holiday(day, _int(item.get("table"), f"holiday {day}: table", 1, table_count)))
    if len({h.day for h in holidays}) != len(holidays):
        raise ParamError("a holiday date is listed twice")
    rest: set[int] = set()
    for name in _list(top.get("rest_days", []), "rest_days", 0, 7):
        if name not in WEEKDAYS:
            raise ParamError(f"rest day {name!r} is not one of {', '.join(WEEKDAYS)}")
        rest.add(WEEKDAYS.index(name))
    rest_table = _int(top.get("rest_table", 1), "rest_table", 1, table_count)
    return TouSet(tuple(seasons), tuple(tables), tuple(holidays), frozenset(rest), rest_table, tariffs)


def comparable(di: str, value: Any) -> Any:
    """An item's value as read back, in the form :meth:`TouSet.meter_items` gives it."""
    if di == REST_WORD and isinstance(value, Mapping):
        return int(value.get("raw", 0)) & 0x7F
    return value


def item_diff(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """DI -> (current, wanted) of the items whose values differ (a missing current value is None)."""
    return {
        di: (comparable(di, current.get(di)), value)
        for di, value in wanted.items()
        if comparable(di, current.get(di)) != value
    }
