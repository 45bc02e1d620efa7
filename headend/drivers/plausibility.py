"""Whether a meter's cumulative energy register can really read what a reply says: the last value
accepted from it and the VEE bound (``headend.register_limits``: the register may not decrease unless
it wraps, nor advance faster than the meter's rating allows). A reply that fails is re-read before
anything is stored; see :class:`headend.drivers.dlt645.Dlt645Driver`."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

from headend.register_limits import MeterLimits, is_rollover, limits_of


def is_register(quantity: str) -> bool:
    """Cumulative energy registers (kWh, kvarh) are the quantities whose value can only grow."""
    return quantity.startswith("energy_")


class RegisterGuard:
    """The last accepted value of each energy register of one meter, and when it was read."""

    def __init__(self, limits: MeterLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._last: dict[str, tuple[float, Decimal]] = {}

    @classmethod
    def for_protocol(cls, protocol: str, clock: Callable[[], float] = time.monotonic) -> RegisterGuard:
        """The guard with the fleet's default rating for a meter of ``protocol``."""
        return cls(limits_of(protocol, None), clock)

    def doubt(self, quantity: str, value: float) -> str | None:
        """Why ``value`` cannot follow the last accepted value of ``quantity``; None when it can (or
        nothing was accepted yet)."""
        last = self._last.get(quantity)
        if last is None or not is_register(quantity):
            return None
        at, before = last
        after = Decimal(repr(value))
        allowed = self.limits.max_advance(timedelta(seconds=max(self.clock() - at, 0.0)))
        if after < before and not is_rollover(before, after, self.limits.rollover_at, allowed):
            return f"{quantity} decreased {before} -> {after}"
        if after - before > allowed:
            return (
                f"{quantity} advanced {after - before} since the last read, more than {allowed:.2f} allowed"
            )
        return None

    def fell_from(self, quantity: str, value: float) -> float | None:
        """The last accepted value of ``quantity`` when ``value`` is below it and no wrap explains it
        (the register went backwards); None otherwise."""
        last = self._last.get(quantity)
        if last is None or not is_register(quantity):
            return None
        at, before = last
        after = Decimal(repr(value))
        allowed = self.limits.max_advance(timedelta(seconds=max(self.clock() - at, 0.0)))
        if after < before and not is_rollover(before, after, self.limits.rollover_at, allowed):
            return float(before)
        return None

    def accept(self, quantity: str, value: float) -> None:
        """``value`` was stored: later values of ``quantity`` must be able to follow it."""
        if is_register(quantity):
            self._last[quantity] = (self.clock(), Decimal(repr(value)))
