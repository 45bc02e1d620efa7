"""DL/T 645-2007 time-of-use parameter items: counts, switch times, season and daily tables, holidays.

Layouts (data bytes after −0x33; each entry least significant byte first, entries in table order):

* ``04 00 02 01`` … ``04 00 02 04``: season count p, daily-table count q, switch points per day m,
  tariff count k (NN, 1 byte); ``04 00 02 05`` public-holiday count n (NNNN, 2 bytes).
* ``04 00 01 06`` / ``04 00 01 07``: the time at which the meter switches season / daily tables to
  the other set (YYMMDDhhmm, 5 bytes).
* ``04 00 08 01``: rest-day word (bit 0 Sunday … bit 6 Saturday, 1 = working day, 0 = rest day);
  ``04 00 08 02``: the daily table used on rest days (NN).
* ``04 01 00 00`` / ``04 02 00 00``: first / second set season table, p × MMDDNN (start of the
  season, daily table number) — wire order per entry NN DD MM.
* ``04 01 00 01..08`` / ``04 02 00 01..08``: first / second set daily table 1..8, m × hhmmNN (start
  of the slot, tariff number) — wire order per entry NN mm hh.
* ``04 03 00 01..FE``: public holiday 1..254, YYMMDDNN (date, daily table number).

Decoded values: a season entry is ``{"start": "MM-DD", "table": n}``, a slot ``{"start": "hh:mm",
"tariff": n}``, a holiday ``{"date": date, "table": n}``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from construct import Construct, GreedyRange

from protocols.dlt645.errors import EncodeError, PayloadError
from protocols.dlt645.formats import Bcd, BitWord, Scalar, Timestamp, bcd_digits

MAX_SEASONS = 14
MAX_DAILY_TABLES = 8
MAX_SLOTS = 14
MAX_HOLIDAYS = 254
WEEKDAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
WEEKDAY_BITS = dict(enumerate(WEEKDAYS))


def _number(value: Any, what: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise EncodeError(f"{what} {value!r} is not a number") from None
    if not low <= number <= high:
        raise EncodeError(f"{what} {number} is outside {low}..{high}")
    return number


def _pair(text: Any, sep: str, what: str) -> tuple[int, int]:
    try:
        first, second = str(text).split(sep)
        return int(first), int(second)
    except ValueError:
        raise EncodeError(f"{what} {text!r} is not 'NN{sep}NN'") from None


def _digits(text: str) -> bytes:
    return bytes.fromhex(text)[::-1]


class SeasonEntry(Scalar):
    """One season (时区): start month and day, daily table number — MMDDNN, 3 bytes."""

    def __init__(self) -> None:
        super().__init__(3)

    def decode_bytes(self, raw: bytes) -> dict[str, Any]:
        digits = bcd_digits(raw)
        month, day, table = int(digits[0:2]), int(digits[2:4]), int(digits[4:6])
        if not (1 <= month <= 12 and 1 <= day <= 31):
            raise PayloadError(f"season start {month:02d}-{day:02d} is not a date")
        return {"start": f"{month:02d}-{day:02d}", "table": table}

    def encode_value(self, value: Any) -> bytes:
        month, day = _pair(_field(value, "start"), "-", "season start")
        if not (1 <= month <= 12 and 1 <= day <= 31):
            raise EncodeError(f"season start {month:02d}-{day:02d} is not a date")
        table = _number(_field(value, "table"), "daily table", 1, MAX_DAILY_TABLES)
        return _digits(f"{month:02d}{day:02d}{table:02d}")


class SlotEntry(Scalar):
    """One switch point of a daily table (日时段): start hour and minute, tariff — hhmmNN, 3 bytes."""

    def __init__(self) -> None:
        super().__init__(3)

    def decode_bytes(self, raw: bytes) -> dict[str, Any]:
        digits = bcd_digits(raw)
        hour, minute, tariff = int(digits[0:2]), int(digits[2:4]), int(digits[4:6])
        if not (hour <= 23 and minute <= 59):
            raise PayloadError(f"slot start {hour:02d}:{minute:02d} is not a time of day")
        return {"start": f"{hour:02d}:{minute:02d}", "tariff": tariff}

    def encode_value(self, value: Any) -> bytes:
        hour, minute = _pair(_field(value, "start"), ":", "slot start")
        if not (0 <= hour <= 23 and 0 <= minute <= 59):
            raise EncodeError(f"slot start {hour:02d}:{minute:02d} is not a time of day")
        tariff = _number(_field(value, "tariff"), "tariff", 1, 63)
        return _digits(f"{hour:02d}{minute:02d}{tariff:02d}")


class HolidayEntry(Scalar):
    """One public holiday (公共假日): date and daily table number — YYMMDDNN, 4 bytes."""

    _DATE = Timestamp("YYMMDD")

    def __init__(self) -> None:
        super().__init__(4)

    def decode_bytes(self, raw: bytes) -> dict[str, Any]:
        table = int(bcd_digits(raw[:1]))
        return {"date": self._DATE.decode_bytes(raw[1:]), "table": table}

    def encode_value(self, value: Any) -> bytes:
        day = _field(value, "date")
        if not isinstance(day, dt.date):
            raise EncodeError(f"holiday date {day!r} is not a date")
        table = _number(_field(value, "table"), "daily table", 1, MAX_DAILY_TABLES)
        return _digits(f"{table:02d}") + self._DATE.encode_value(day)


def _field(value: Any, name: str) -> Any:
    try:
        return value[name]
    except (KeyError, TypeError, IndexError):
        raise EncodeError(f"{value!r} has no {name!r}") from None


class Table(GreedyRange):
    """A table of 1..``limit`` entries (a season or daily table)."""

    def __init__(self, entry: Construct, limit: int) -> None:
        super().__init__(entry)
        self.limit = limit

    def compile(self, filename: str | None = None) -> Table:
        """Kept as it is: the entry limit is checked when building."""
        return self

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        if not obj or len(obj) > self.limit:
            raise EncodeError(f"a table holds 1..{self.limit} entries, got {len(obj or ())}")
        return super()._build(obj, stream, context, path)


SEASON_TABLE = Table(SeasonEntry(), MAX_SEASONS)
DAILY_TABLE = Table(SlotEntry(), MAX_SLOTS)
SWITCH_TIME = Timestamp("YYMMDDhhmm")
COUNT = Bcd(1)
SETS = {0x01: "first", 0x02: "second"}


def tou_items() -> dict[str, tuple[str, Construct, str | None]]:
    """The time-of-use items as catalogue entries (name, format, unit)."""
    items: dict[str, tuple[str, Construct, str | None]] = {
        "04000106": ("season_table_switch_time", SWITCH_TIME, None),
        "04000107": ("daily_table_switch_time", SWITCH_TIME, None),
        "04000201": ("season_count", COUNT, None),
        "04000202": ("daily_table_count", COUNT, None),
        "04000203": ("slots_per_day", COUNT, None),
        "04000204": ("tariff_count", COUNT, None),
        "04000205": ("holiday_count", Bcd(2), None),
        "04000801": ("rest_day_word", BitWord(1, WEEKDAY_BITS), None),
        "04000802": ("rest_day_table", COUNT, None),
    }
    for code, label in SETS.items():
        items[f"04{code:02X}0000"] = (f"{label}_set_season_table", SEASON_TABLE, None)
        for table in range(1, MAX_DAILY_TABLES + 1):
            items[f"04{code:02X}00{table:02X}"] = (f"{label}_set_daily_table_{table}", DAILY_TABLE, None)
    for n in range(1, MAX_HOLIDAYS + 1):
        items[f"040300{n:02X}"] = (f"holiday_{n}", HolidayEntry(), None)
    return items


def season_table_di(set_number: int) -> str:
    """The season table of set 1 (first) or 2 (second)."""
    return f"04{_set(set_number):02X}0000"


def daily_table_di(set_number: int, table: int) -> str:
    """Daily table ``table`` (1..8) of set 1 or 2."""
    if not 1 <= table <= MAX_DAILY_TABLES:
        raise EncodeError(f"daily table must be 1..{MAX_DAILY_TABLES}, got {table}")
    return f"04{_set(set_number):02X}00{table:02X}"


def holiday_di(n: int) -> str:
    """Public holiday ``n`` (1..254)."""
    if not 1 <= n <= MAX_HOLIDAYS:
        raise EncodeError(f"holiday number must be 1..{MAX_HOLIDAYS}, got {n}")
    return f"040300{n:02X}"


def _set(set_number: int) -> int:
    if set_number not in SETS:
        raise EncodeError(f"parameter set must be 1 or 2, got {set_number}")
    return set_number


__all__ = [
    "DAILY_TABLE",
    "MAX_DAILY_TABLES",
    "MAX_HOLIDAYS",
    "MAX_SEASONS",
    "MAX_SLOTS",
    "SEASON_TABLE",
    "HolidayEntry",
    "SeasonEntry",
    "SlotEntry",
    "daily_table_di",
    "holiday_di",
    "season_table_di",
    "tou_items",
]
