"""Meter clock policy, the one owner of it: when a drifting clock is corrected, and how.

The driver only reads the clock, broadcasts the time or writes it (:class:`ClockDriver`). This
module decides: nothing within ``max_drift``; no correction near the meter's local midnight or a
load-profile boundary (the record around it would be stamped wrongly); a broadcast (0x08) up to
``broadcast_limit``, an addressed, password-protected write beyond it; then a read-back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from headend.config import ClockConfig

ClockAction = Literal["none", "skipped", "broadcast", "write"]


class ClockDriver(Protocol):
    """What the clock check needs from a meter driver."""

    utc_offset: timedelta  # the meter's local time minus UTC

    async def read_clock(self) -> datetime: ...

    async def set_clock(self, *, broadcast: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class ClockPolicy:
    """The configured correction policy (seconds throughout)."""

    max_drift: float
    broadcast_limit: float
    boundary_interval: float
    boundary_guard: float
    midnight_guard: float

    @classmethod
    def from_config(cls, clock: ClockConfig) -> ClockPolicy:
        return cls(
            clock.max_drift,
            clock.broadcast_limit,
            clock.boundary_interval,
            clock.boundary_guard,
            clock.midnight_guard,
        )

    def decide(self, drift: float, local_now: datetime) -> tuple[ClockAction, str]:
        """The action for a clock ``drift`` s off at the meter's local time ``local_now``, with a reason."""
        if abs(drift) <= self.max_drift:
            return "none", ""
        since_midnight = local_now.hour * 3600 + local_now.minute * 60 + local_now.second
        if min(since_midnight, 86400 - since_midnight) < self.midnight_guard:
            return "skipped", "too close to midnight"
        since_boundary = (since_midnight + local_now.microsecond / 1e6) % self.boundary_interval
        if min(since_boundary, self.boundary_interval - since_boundary) < self.boundary_guard:
            return "skipped", "too close to an interval boundary"
        return ("broadcast", "") if abs(drift) <= self.broadcast_limit else ("write", "")


@dataclass(frozen=True, slots=True)
class ClockResult:
    """One clock check: the drift found, what was done about it and the drift read back after."""

    checked_at: datetime
    meter_time: datetime  # UTC
    drift_before: float
    action: ClockAction
    reason: str
    drift_after: float | None
    off_after: bool

    @property
    def corrected(self) -> bool:
        """Whether the time was sent to the meter (broadcast or write)."""
        return self.action in ("broadcast", "write")

    def details_json(self) -> str:
        return json.dumps(
            {
                "drift_s": round(self.drift_before, 3),
                "action": self.action,
                "corrected": self.corrected,
                "drift_after_s": None if self.drift_after is None else round(self.drift_after, 3),
            }
        )


async def _drift(driver: ClockDriver) -> tuple[datetime, float]:
    """The meter's clock and its drift from UTC, taken at the middle of the exchange (seconds)."""
    before = time.time()
    meter_time = await driver.read_clock()
    after = time.time()
    return meter_time, meter_time.timestamp() - (before + after) / 2


async def check_clock(
    driver: ClockDriver, policy: ClockPolicy, fence: Callable[[], Awaitable[None]] | None = None
) -> ClockResult:
    """Read the clock; correct it as ``policy`` decides (after ``fence``, which raises when this daemon
    may not write to the meter: a cluster lease moved) and read it back."""
    checked_at = datetime.now(UTC)
    meter_time, drift = await _drift(driver)
    action, reason = policy.decide(drift, (checked_at + driver.utc_offset).replace(tzinfo=None))
    if action in ("none", "skipped"):
        return ClockResult(checked_at, meter_time, drift, action, reason, None, False)
    if fence is not None:
        await fence()
    await driver.set_clock(broadcast=action == "broadcast")
    _, after = await _drift(driver)
    return ClockResult(checked_at, meter_time, drift, action, reason, after, abs(after) > policy.max_drift)
