"""What a meter's energy register can physically do: its wrap width and the most it can advance per hour."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

# Without a rating in the meter's settings: a three-phase 240 V, 100 A meter (72 kW), the largest
# direct-connected meter in the fleet; a register advancing faster than that is not consumption.
DEFAULT_VOLTAGE_V = 240
DEFAULT_MAX_CURRENT_A = 100
DEFAULT_PHASES = 3
MARGIN = Decimal("1.2")  # overload and rounding
SLACK_KWH = Decimal("0.1")  # register resolution and clock jitter
DLT645_DIGITS = 6  # XXXXXX.XX: wraps at 1,000,000 kWh


@dataclass(frozen=True)
class MeterLimits:
    """``rollover_at``: where the register wraps (None: it never does); ``max_kw``: rated power."""

    rollover_at: Decimal | None
    max_kw: Decimal

    def max_advance(self, elapsed: timedelta) -> Decimal:
        """The largest register advance (kWh, register units) the meter can make in ``elapsed``."""
        hours = Decimal(max(elapsed.total_seconds(), 0)) / 3600
        return self.max_kw * hours * MARGIN + SLACK_KWH


def limits_of(protocol: str, settings: str | dict[str, object] | None) -> MeterLimits:
    """Limits from the meter's protocol and its inventory ``settings`` (``register_digits``,
    ``voltage_v``, ``max_current_a``, ``phases``). DL/T 645 registers wrap at 6 integer digits; Modbus
    meters store floats and do not wrap unless ``register_digits`` says so."""
    values = json.loads(settings) if isinstance(settings, str) else dict(settings or {})
    digits = values.get("register_digits", DLT645_DIGITS if protocol.startswith("dlt645") else None)
    rollover = None if digits is None else Decimal(10) ** int(str(digits))
    kw = (
        Decimal(str(values.get("voltage_v", DEFAULT_VOLTAGE_V)))
        * Decimal(str(values.get("max_current_a", DEFAULT_MAX_CURRENT_A)))
        * Decimal(str(values.get("phases", DEFAULT_PHASES)))
        / 1000
    )
    return MeterLimits(rollover, kw)


def is_rollover(
    previous: Decimal, current: Decimal, rollover_at: Decimal | None, max_advance: Decimal
) -> bool:
    """Whether ``previous`` -> ``current`` (a decrease) is the register wrapping past its top."""
    if rollover_at is None or not Decimal(0) <= current < rollover_at or not previous < rollover_at:
        return False
    return rollover_at - previous + current <= max_advance
