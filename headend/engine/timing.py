"""Interval arithmetic: boundaries are multiples of the interval since the Unix epoch, in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def floor_boundary(t: datetime, interval: float) -> datetime:
    """The latest interval boundary at or before ``t``."""
    seconds = (t - EPOCH).total_seconds()
    return EPOCH + timedelta(seconds=(seconds // interval) * interval)


def next_boundary(t: datetime, interval: float) -> datetime:
    """The first interval boundary strictly after ``t``."""
    return floor_boundary(t, interval) + timedelta(seconds=interval)


def boundaries_between(start: datetime, end: datetime, interval: float) -> list[datetime]:
    """Every boundary ``b`` with ``start <= b < end``."""
    first = floor_boundary(start, interval)
    if first < start:
        first += timedelta(seconds=interval)
    step = timedelta(seconds=interval)
    out = []
    b = first
    while b < end:
        out.append(b)
        b += step
    return out
