"""Tariff prices per register with effective dates; charges for consumption per register."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")


class TariffError(LookupError):
    """No price is in effect for a register at a time."""


@dataclass(frozen=True)
class Price:
    """Price per kWh of one tariff register ('total', 't1'..'t4') from ``effective_from`` on."""

    register: str
    price: Decimal
    effective_from: datetime


def price_at(prices: list[Price], register: str, at: datetime) -> Decimal:
    """The latest price of ``register`` effective at ``at``."""
    valid = [p for p in prices if p.register == register and p.effective_from <= at]
    if not valid:
        raise TariffError(f"no price for register {register!r} at {at.isoformat()}")
    return max(valid, key=lambda p: p.effective_from).price


def charge(prices: list[Price], consumption: dict[str, Decimal], at: datetime) -> Decimal:
    """Money for ``consumption`` (kWh per tariff register) at the prices in effect at ``at``, in cents."""
    total = sum((kwh * price_at(prices, register, at) for register, kwh in consumption.items()), Decimal(0))
    return total.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Block:
    """A monthly consumption block: kWh up to ``upto`` (None: no limit) cost ``price`` each."""

    upto: Decimal | None
    price: Decimal


@dataclass(frozen=True)
class Slot:
    """A time-of-use price from ``start`` to ``end`` local time (may wrap midnight), in the season
    ``season`` (``MM-DD..MM-DD``, may wrap the new year; None: all year)."""

    start: time
    end: time
    price: Decimal
    season: tuple[tuple[int, int], tuple[int, int]] | None = None


def tiered_charge(blocks: list[Block], month_to_date: Decimal, kwh: Decimal) -> Decimal:
    """Money for ``kwh`` used on top of ``month_to_date`` this month, each kWh at its block's price."""
    start, end = month_to_date, month_to_date + kwh
    total, lower = Decimal(0), Decimal(0)
    for block in blocks:
        upper = end if block.upto is None else block.upto
        total += max(Decimal(0), min(end, upper) - max(start, lower)) * block.price
        if block.upto is None:
            return total.quantize(CENT, rounding=ROUND_HALF_UP)
        lower = upper
    if end > lower:
        raise TariffError("the tariff's last block must have no upper limit (*=PRICE)")
    return total.quantize(CENT, rounding=ROUND_HALF_UP)


def _in_season(slot: Slot, moment: datetime) -> bool:
    if slot.season is None:
        return True
    start, end = slot.season
    day = (moment.month, moment.day)
    return start <= day <= end if start <= end else day >= start or day <= end


def _in_window(slot: Slot, moment: time) -> bool:
    if slot.start < slot.end:
        return slot.start <= moment < slot.end
    return moment >= slot.start or moment < slot.end


def slot_price(slots: list[Slot], local: datetime) -> Decimal:
    """The time-of-use price in force at a local time (the first slot that matches)."""
    for slot in slots:
        if _in_season(slot, local) and _in_window(slot, local.time()):
            return slot.price
    raise TariffError(f"no time-of-use slot covers {local.isoformat()}")


def _minutes(moment: time) -> int:
    return moment.hour * 60 + moment.minute


def _uncovered_minutes(slots: list[Slot]) -> tuple[int, ...]:
    """Minutes of the day (0..1439) no slot of ``slots`` covers."""
    covered = [False] * 1440
    for slot in slots:
        start, end = _minutes(slot.start), _minutes(slot.end)
        span = range(start, end) if start < end else [*range(start, 1440), *range(0, end)]
        for minute in span:
            covered[minute] = True
    return tuple(m for m, hit in enumerate(covered) if not hit)


def _runs(values: list[int], size: int) -> list[tuple[int, int]]:
    """Consecutive runs ``(first, last)`` of sorted integers in ``0..size-1``, a run through the end
    and one from 0 joined (as a wrap past midnight or the new year)."""
    runs: list[tuple[int, int]] = []
    for value in values:
        if runs and runs[-1][1] == value - 1:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    if len(runs) > 1 and runs[0][0] == 0 and runs[-1][1] == size - 1:
        runs = [*runs[1:-1], (runs[-1][0], runs[0][1])]
    return runs


def coverage_gaps(slots: list[Slot]) -> str | None:
    """Which hours of which days no slot covers, as ``HH:MM-HH:MM[, ...] [on MM-DD..MM-DD]``; None
    when every minute of every day of the year has a price."""
    year = [date(2024, 1, 1) + timedelta(days=n) for n in range(366)]  # a leap year: 02-29 too
    gaps: dict[tuple[int, ...], list[int]] = {}
    for n, day in enumerate(year):
        moment = datetime(day.year, day.month, day.day)
        missing = _uncovered_minutes([s for s in slots if _in_season(s, moment)])
        if missing:
            gaps.setdefault(missing, []).append(n)
    if not gaps:
        return None
    missing, days = next(iter(gaps.items()))
    hours = ", ".join(
        f"{a // 60:02d}:{a % 60:02d}-{(b + 1) // 60 % 24:02d}:{(b + 1) % 60:02d}"
        for a, b in _runs(list(missing), 1440)
    )
    if len(days) == len(year):
        return hours
    seasons = ", ".join(f"{year[a]:%m-%d}..{year[b]:%m-%d}" for a, b in _runs(days, len(year)))
    return f"{hours} on {seasons}"


def _month_day(text: str) -> tuple[int, int]:
    month, day = text.split("-")
    return int(month), int(day)


def parse_slot(text: str) -> Slot:
    """``[MM-DD..MM-DD:]HH:MM-HH:MM=PRICE``, e.g. ``06-01..09-30:08:00-22:00=0.62``."""
    try:
        head, _, price = text.rpartition("=")
        season = None
        if ".." in head:
            season_text, head = head.split(":", 1)
            first_day, last_day = season_text.split("..")
            season = (_month_day(first_day), _month_day(last_day))
        first, last = head.split("-")
        return Slot(time.fromisoformat(first), time.fromisoformat(last), Decimal(price), season)
    except (ValueError, ArithmeticError):
        raise TariffError(f"slot {text!r}: expected [MM-DD..MM-DD:]HH:MM-HH:MM=PRICE") from None


def parse_block(text: str) -> Block:
    """``UPTO=PRICE`` (kWh per month; ``*`` for the open last block), e.g. ``200=0.56``."""
    upto, sep, price = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return Block(None if upto.strip() == "*" else Decimal(upto), Decimal(price))
    except (ValueError, ArithmeticError):
        raise TariffError(f"block {text!r}: expected UPTO=PRICE, e.g. 200=0.56 or *=0.86") from None


def blocks_from(definition: dict[str, object]) -> list[Block]:
    """The blocks of a tiered tariff's stored definition."""
    rows = definition.get("blocks")
    if not isinstance(rows, list):
        return []
    return [
        Block(None if b["upto"] is None else Decimal(str(b["upto"])), Decimal(str(b["price"]))) for b in rows
    ]


def slots_from(definition: dict[str, object]) -> list[Slot]:
    """The slots of a time-of-use tariff's stored definition (stored as their text form)."""
    rows = definition.get("slots")
    if not isinstance(rows, list):
        return []
    return [parse_slot(str(text)) for text in rows]
