"""Consumption between two energy-register readings, with rollover and meter replacement."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


class ConsumptionError(ValueError):
    """The two readings cannot be turned into a consumption (e.g. a decrease without rollover)."""


@dataclass(frozen=True)
class RegisterReading:
    """One energy-register value (kWh) of one physical meter; ``meter_serial`` identifies the device."""

    meter_serial: str
    value: Decimal


def register_delta(
    previous: RegisterReading,
    current: RegisterReading,
    *,
    rollover_at: Decimal,
    removed_final: Decimal | None = None,
    installed_initial: Decimal | None = None,
) -> Decimal:
    """Consumption from ``previous`` to ``current``.

    Same device: the register difference, adding ``rollover_at`` once when the register wrapped
    (current below previous). Replaced device: the old meter's final value minus ``previous`` plus
    the new meter's value minus its initial value; both must be given.
    """
    if previous.meter_serial != current.meter_serial:
        if removed_final is None or installed_initial is None:
            raise ConsumptionError(
                f"meter replaced ({previous.meter_serial} -> {current.meter_serial}): "
                "final and initial register values are required"
            )
        old_part = register_delta(
            previous, RegisterReading(previous.meter_serial, removed_final), rollover_at=rollover_at
        )
        new_part = register_delta(
            RegisterReading(current.meter_serial, installed_initial), current, rollover_at=rollover_at
        )
        return old_part + new_part
    if current.value >= previous.value:
        return current.value - previous.value
    if not Decimal(0) <= current.value < rollover_at or previous.value >= rollover_at:
        raise ConsumptionError(f"register decreased {previous.value} -> {current.value} outside its range")
    return rollover_at - previous.value + current.value
