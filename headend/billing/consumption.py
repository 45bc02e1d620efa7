"""Consumption between two energy-register readings: rollover only where the register can wrap, replacement.

A decrease is a rollover only when the register has a finite width (``rollover_at``) and the wrapped
advance (top - previous + current) is no more than the meter could have used (``max_advance``): the
previous value was near the top. Any other decrease is a meter swap or a fault, never consumption.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from headend.register_limits import is_rollover


class ConsumptionError(ValueError):
    """The two readings cannot be turned into a consumption (e.g. a decrease that is not a rollover)."""


@dataclass(frozen=True)
class RegisterReading:
    """One energy-register value (kWh) of one physical meter; ``meter_serial`` identifies the device."""

    meter_serial: str
    value: Decimal


def register_delta(
    previous: RegisterReading,
    current: RegisterReading,
    *,
    rollover_at: Decimal | None,
    max_advance: Decimal | None = None,
    removed_final: Decimal | None = None,
    installed_initial: Decimal | None = None,
) -> Decimal:
    """Consumption from ``previous`` to ``current``.

    Same device: the register difference; a decrease counts as a rollover only when
    :func:`is_rollover` allows it (``max_advance`` None means up to 1 % of the register width).
    Replaced device: the old meter's final value minus ``previous`` plus the new meter's value minus
    its initial value; both must be given.
    """
    if previous.meter_serial != current.meter_serial:
        if removed_final is None or installed_initial is None:
            raise ConsumptionError(
                f"meter replaced ({previous.meter_serial} -> {current.meter_serial}): "
                "final and initial register values are required"
            )
        old_part = register_delta(
            previous,
            RegisterReading(previous.meter_serial, removed_final),
            rollover_at=rollover_at,
            max_advance=max_advance,
        )
        new_part = register_delta(
            RegisterReading(current.meter_serial, installed_initial),
            current,
            rollover_at=rollover_at,
            max_advance=max_advance,
        )
        return old_part + new_part
    if current.value >= previous.value:
        return current.value - previous.value
    limit = max_advance if max_advance is not None else (rollover_at or Decimal(0)) / 100
    if rollover_at is None or not is_rollover(previous.value, current.value, rollover_at, limit):
        raise ConsumptionError(
            f"register decreased {previous.value} -> {current.value}: not a rollover "
            f"({'no wrap width' if rollover_at is None else 'previous value not near the top'}); "
            "a meter swap or a fault"
        )
    return rollover_at - previous.value + current.value
