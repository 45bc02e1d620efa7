"""Line loss per transformer area: day boundaries in the analytics time zone, the incremental SQL
refresh, and the daily and monthly figures with their completeness.

A day's loss uses the energy registers at the day's two local midnights (the meters' daily freezes).
A month is the sum of its days and is complete only when every day of it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from headend.store.lineloss import daily_losses, monthly_losses, refresh_day


@dataclass(frozen=True, slots=True)
class AreaLoss:
    """One area's loss over a day or a month; the figures are None while it is incomplete."""

    area: str
    period: str
    supply_kwh: float | None
    customers_kwh: float | None
    loss_kwh: float | None
    loss_pct: float | None
    missing: list[str]  # a day: the meters without both freezes; a month: the days not complete

    @property
    def complete(self) -> bool:
        return not self.missing


def boundaries(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC instants of ``day``'s local midnight and the next one."""
    start = datetime.combine(day, time(0), zone)
    end = datetime.combine(day + timedelta(days=1), time(0), zone)
    return start.astimezone(UTC), end.astimezone(UTC)


async def refresh(conn: asyncpg.Connection, days: list[date], zone: ZoneInfo) -> int:
    """Recompute the area losses of ``days``; returns how many area-days were new or changed."""
    written = 0
    for day in days:
        lo, hi = boundaries(day, zone)
        async with conn.transaction():
            written += await refresh_day(conn, day, lo, hi)
    return written


async def daily(
    conn: asyncpg.Connection, day: date, zone: ZoneInfo, area: str | None = None
) -> list[AreaLoss]:
    """Every area's (or one area's) loss on ``day``, refreshed first."""
    await refresh(conn, [day], zone)
    return [
        AreaLoss(
            r["area"],
            day.isoformat(),
            r["supply_kwh"],
            r["customers_kwh"],
            r["loss_kwh"],
            r["loss_pct"],
            list(r["missing"]),
        )
        for r in await daily_losses(conn, day, area)
    ]


def month_days(month: date) -> list[date]:
    """The days of ``month`` (any day of it)."""
    first = month.replace(day=1)
    after = (first + timedelta(days=32)).replace(day=1)
    return [first + timedelta(days=n) for n in range((after - first).days)]


async def monthly(
    conn: asyncpg.Connection, month: date, zone: ZoneInfo, today: date, area: str | None = None
) -> list[AreaLoss]:
    """Every area's (or one area's) loss over ``month``: the days up to yesterday refreshed, the
    complete days summed; complete only when every day of the month is."""
    days = month_days(month)
    await refresh(conn, [d for d in days if d < today], zone)
    out = []
    for r in await monthly_losses(conn, days[0], days[-1] + timedelta(days=1), area):
        incomplete = [d.isoformat() for d in r["incomplete_days"]]
        whole = not incomplete
        out.append(
            AreaLoss(
                r["area"],
                days[0].strftime("%Y-%m"),
                r["supply_kwh"] if whole else None,
                r["customers_kwh"] if whole else None,
                r["loss_kwh"] if whole else None,
                r["loss_pct"] if whole else None,
                incomplete,
            )
        )
    return out
