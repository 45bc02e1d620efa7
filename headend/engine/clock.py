"""Meter clock check: read the clock, correct drift beyond a threshold, read it back."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class ClockResult:
    checked_at: datetime
    drift_before: float
    corrected: bool
    drift_after: float | None
    off_after: bool

    def details_json(self) -> str:
        return json.dumps(
            {
                "drift_s": round(self.drift_before, 3),
                "corrected": self.corrected,
                "drift_after_s": None if self.drift_after is None else round(self.drift_after, 3),
            }
        )


async def _drift(driver: Any) -> float:
    """Meter clock minus UTC now, taken at the middle of the exchange (seconds)."""
    before = time.time()
    meter_time: datetime = await driver.read_clock()
    after = time.time()
    return meter_time.timestamp() - (before + after) / 2


async def check_clock(driver: Any, max_drift: float) -> ClockResult:
    """Read the clock; if it is off by more than ``max_drift`` s, ``sync_clock`` and verify."""
    checked_at = datetime.now(UTC)
    drift = await _drift(driver)
    if abs(drift) <= max_drift:
        return ClockResult(checked_at, drift, False, None, False)
    await driver.sync_clock(datetime.now(UTC))
    after = await _drift(driver)
    return ClockResult(checked_at, drift, True, after, abs(after) > max_drift)
