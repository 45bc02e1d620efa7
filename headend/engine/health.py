"""Per-meter health: an adaptive timeout from measured turnaround and quarantine after failures."""

from __future__ import annotations

import time
from dataclasses import dataclass

from headend.config import HealthConfig, TimeoutConfig


@dataclass(slots=True)
class MeterHealth:
    """Smoothed round-trip time (RFC 6298 style) and the failure streak of one meter."""

    srtt: float | None = None
    rttvar: float = 0.0
    failures: int = 0
    quarantined_until: float = 0.0
    quarantines: int = 0
    last_error: str = ""


class HealthBook:
    """Health of every meter the engine talks to; all times are ``time.monotonic()`` seconds."""

    def __init__(self, timeouts: TimeoutConfig, health: HealthConfig) -> None:
        self.timeouts = timeouts
        self.policy = health
        self.meters: dict[int, MeterHealth] = {}

    def of(self, meter_id: int) -> MeterHealth:
        state = self.meters.get(meter_id)
        if state is None:
            state = self.meters[meter_id] = MeterHealth()
        return state

    def timeout(self, meter_id: int) -> float:
        """Seconds to wait for one exchange with this meter."""
        state = self.meters.get(meter_id)
        if state is None or state.srtt is None:
            return self.timeouts.initial
        value = state.srtt + 4 * state.rttvar
        return min(self.timeouts.maximum, max(self.timeouts.minimum, value))

    def job_limit(self, meter_id: int, exchanges: int) -> float:
        """Seconds a job of ``exchanges`` exchanges may take: the adaptive timeout for each, plus one
        maximum timeout, so a lost reply and the channel's retry never use up the job's time."""
        return self.timeout(meter_id) * max(1, exchanges) + self.timeouts.maximum

    def succeeded(self, meter_id: int, seconds_per_exchange: float) -> None:
        """Record a successful job and its measured time per exchange; ends any quarantine."""
        state = self.of(meter_id)
        if state.srtt is None:
            state.srtt, state.rttvar = seconds_per_exchange, seconds_per_exchange / 2
        else:
            state.rttvar = 0.75 * state.rttvar + 0.25 * abs(state.srtt - seconds_per_exchange)
            state.srtt = 0.875 * state.srtt + 0.125 * seconds_per_exchange
        state.failures = 0
        state.quarantined_until = 0.0
        state.quarantines = 0
        state.last_error = ""

    def failed(self, meter_id: int, error: str, now: float | None = None) -> bool:
        """Record a failure; returns True when this failure (re)starts a quarantine."""
        state = self.of(meter_id)
        state.failures += 1
        state.last_error = error
        if state.failures < self.policy.quarantine_after:
            return False
        now = time.monotonic() if now is None else now
        backoff = min(self.policy.backoff_max, self.policy.backoff * 2**state.quarantines)
        state.quarantined_until = now + backoff
        state.quarantines += 1
        return True

    def quarantined(self, meter_id: int, now: float | None = None) -> bool:
        state = self.meters.get(meter_id)
        if state is None or not state.quarantined_until:
            return False
        return (time.monotonic() if now is None else now) < state.quarantined_until

    def quarantined_count(self) -> int:
        now = time.monotonic()
        return sum(1 for s in self.meters.values() if s.quarantined_until > now)
