"""``--from``/``--to`` of the reporting commands: an ISO 8601 time with its offset, or a date meaning
local midnight in ``--timezone``."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class TimeRangeError(ValueError):
    """A ``--from``/``--to``/``--timezone`` that cannot be used; ``str()`` is the one line to print."""


def zone_named(name: str) -> ZoneInfo:
    """The time zone ``name`` (e.g. ``Asia/Shanghai``)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise TimeRangeError(f"--timezone {name!r}: unknown time zone") from None


def moment(option: str, value: str, zone: ZoneInfo) -> datetime:
    """``value`` of ``option`` as an aware time: a date is its local midnight, a time without an
    offset is local time."""
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), zone)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise TimeRangeError(
            f"{option} {value!r}: expected a date (2026-03-01) or a time (2026-03-01T08:00+08:00)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)


def time_range(start: str, end: str, zone_name: str) -> tuple[datetime, datetime, ZoneInfo]:
    """``(start, end, zone)`` with ``start`` before ``end``."""
    zone = zone_named(zone_name)
    first, last = moment("--from", start, zone), moment("--to", end, zone)
    if last <= first:
        raise TimeRangeError(f"--to {end!r} is not after --from {start!r}")
    return first, last, zone
