"""Time for simulated meters: a shared source of UTC and a per-meter local clock with offset and drift."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class TimeSource:
    """UTC now, from the wall clock by default; ``speed`` > 1 runs simulated time faster."""

    def __init__(self, speed: float = 1.0, start: datetime | None = None) -> None:
        self.speed = speed
        self._origin_wall = time.time()
        self._origin = (start or datetime.now(UTC)).astimezone(UTC)

    def now(self) -> datetime:
        """Simulated UTC time (aware)."""
        elapsed = (time.time() - self._origin_wall) * self.speed
        return self._origin + timedelta(seconds=elapsed)

    def advance(self, seconds: float) -> None:
        """Move simulated time forward by ``seconds`` at once (tests: hours pass without waiting)."""
        if seconds < 0:
            raise ValueError("simulated time only moves forward")
        self._origin += timedelta(seconds=seconds)


class MeterClock:
    """A meter's local clock: UTC + time zone + offset, drifting by ``drift_ppm``.

    Meters keep naive local time (China: UTC+8); ``local()`` returns it, ``set_local`` sets it as a
    clock write or time sync does.
    """

    def __init__(
        self, source: TimeSource, utc_offset: timedelta, offset_s: float = 0.0, drift_ppm: float = 0.0
    ) -> None:
        self.source = source
        self.utc_offset = utc_offset
        self.offset = timedelta(seconds=offset_s)
        self.drift_ppm = drift_ppm
        self._drift_origin = source.now()

    def _drift(self, now: datetime) -> timedelta:
        return timedelta(seconds=(now - self._drift_origin).total_seconds() * self.drift_ppm / 1e6)

    def local(self, now: datetime | None = None) -> datetime:
        """The meter's local time as it would display it (naive, whole seconds)."""
        now = now or self.source.now()
        value = now + self.utc_offset + self.offset + self._drift(now)
        return value.replace(tzinfo=None, microsecond=0)

    def error(self) -> timedelta:
        """How far the meter's clock is from true local time."""
        now = self.source.now()
        return self.offset + self._drift(now)

    def set_local(self, value: datetime) -> timedelta:
        """Set the clock to ``value`` (naive local time); returns the correction applied."""
        now = self.source.now()
        true_local = (now + self.utc_offset).replace(tzinfo=None)
        before = self.error()
        self.offset = value - true_local
        self._drift_origin = now
        return self.offset - before

    def jump(self, seconds: float) -> None:
        """Shift the clock (a clock fault)."""
        self.offset += timedelta(seconds=seconds)
