"""Tariff prices per register with effective dates; charges for consumption per register."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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
