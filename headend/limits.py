"""Bounds on numbers and names that come from people, files and environment variables.

One place for the limits the CLI, the inventory import, the configuration and the daemon share, so
that what one accepts the others accept too. Each checker returns the value or raises ValueError
with a one-line reason naming ``what`` was checked.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation

MODBUS_UNIT_IDS = range(1, 248)  # 0 is broadcast, 248..255 reserved
MAX_DB_ID = 2**63 - 1  # bigint / bigserial
MAX_NAME_LENGTH = 200
MAX_MULTIPLIER = 1_000_000.0  # CT ratio x VT ratio of the largest metering points
MAX_REGISTER_KWH = Decimal("1e12")  # above any meter register (and below numeric overflow)
MAX_DAYS = 36_500  # durations in days given on the command line: a century


def unit_id(value: int, what: str = "unit id") -> int:
    """A Modbus unit id a meter can have (1..247)."""
    if value not in MODBUS_UNIT_IDS:
        raise ValueError(f"{what} must be 1..247 (0 is broadcast), got {value}")
    return value


def unit_range(text: str, what: str = "--units") -> range:
    """Modbus unit ids from ``"1-32"`` or ``"7"``: ascending, every one in 1..247."""
    first, dash, last = text.strip().partition("-")
    try:
        low, high = int(first), int(last if dash else first)
    except ValueError:
        raise ValueError(f"{what} wants a range like 1-32, got {text!r}") from None
    if low not in MODBUS_UNIT_IDS or high not in MODBUS_UNIT_IDS or low > high:
        raise ValueError(f"{what} must be an ascending range within 1-247, got {text!r}")
    return range(low, high + 1)


def db_id(value: int, what: str = "id") -> int:
    """A database row id (1 .. 2**63-1)."""
    if not 1 <= value <= MAX_DB_ID:
        raise ValueError(f"{what} must be 1..{MAX_DB_ID}, got {value}")
    return value


def finite(value: float, what: str, low: float, high: float) -> float:
    """A finite float within [low, high]."""
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{what} must be a finite number in {low:g}..{high:g}, got {value!r}")
    return value


def register_kwh(text: str, what: str) -> Decimal:
    """An energy register value from text: a finite, non-negative decimal below 1e12."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{what}: {text!r} is not a number") from None
    if not value.is_finite() or not 0 <= value < MAX_REGISTER_KWH:
        raise ValueError(f"{what}: {text!r} must be a finite number in 0..{MAX_REGISTER_KWH}")
    return value


def days(value: int, what: str) -> int:
    """A whole number of days in 0..MAX_DAYS."""
    if not 0 <= value <= MAX_DAYS:
        raise ValueError(f"{what} must be 0..{MAX_DAYS} days, got {value}")
    return value


def name(value: str, what: str = "name") -> str:
    """A human-given name: printable, at most MAX_NAME_LENGTH characters."""
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"{what} is {len(value)} characters long (at most {MAX_NAME_LENGTH})")
    if not value.isprintable():
        raise ValueError(f"{what} contains control characters")
    return value
