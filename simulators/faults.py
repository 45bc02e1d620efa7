"""Fault injection for simulated buses, deterministic from a seed and counted.

A spec is a comma-separated list, e.g.
``no_reply=0.05,late=0.02,corrupt=0.02,garbage=0.02,garbage_inside=0.01,truncate=0.01`` (rates per
reply; ``shift`` moves 1..9 units between two bytes of a DL/T 645 reply's data field, a corruption
its additive checksum cannot see) plus schedules relative to the bus start:
``offline=ADDR@10+30`` (no answers from second 10 for 30 s), ``power_outage=ADDR@20+15`` (no
answers, no consumption, a power-down record), ``clock_jump=ADDR@5:+600`` (the meter clock jumps by
+600 s). ``ADDR`` is a meter address, ``#N`` (the N-th meter, from 0) or ``*`` (all meters).
``late_delay=3`` sets how late a late reply is.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

RATE_KINDS = ("no_reply", "late", "corrupt", "garbage", "garbage_inside", "truncate", "shift")
SCHEDULE_KINDS = ("offline", "power_outage", "clock_jump")


class FaultSpecError(ValueError):
    """A fault spec that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class ScheduledFault:
    """A fault that starts at ``at_s`` after the bus starts, for one meter selector."""

    kind: str
    meter: str
    at_s: float
    amount: float  # duration in seconds, or the clock jump in seconds


@dataclass(slots=True)
class FaultSpec:
    """Rates per reply and scheduled faults (see the module docstring)."""

    rates: dict[str, float] = field(default_factory=dict)
    schedule: list[ScheduledFault] = field(default_factory=list)
    late_delay_s: float = 3.0

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """Parse a spec string; raises FaultSpecError with the offending item."""
        spec = cls()
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, value = item.partition("=")
            if not sep:
                raise FaultSpecError(f"fault item {item!r} lacks '='")
            if name not in (*RATE_KINDS, *SCHEDULE_KINDS, "late_delay"):
                known = ", ".join((*RATE_KINDS, *SCHEDULE_KINDS, "late_delay"))
                raise FaultSpecError(f"unknown fault {name!r}; known: {known}")
            try:
                if name in RATE_KINDS:
                    spec.rates[name] = _rate(value)
                elif name == "late_delay":
                    spec.late_delay_s = float(value)
                else:
                    spec.schedule.append(_scheduled(name, value))
            except ValueError:
                raise FaultSpecError(f"bad value in fault item {item!r}") from None
        return spec


def _rate(value: str) -> float:
    rate = float(value)
    if not 0 <= rate <= 1:
        raise ValueError(value)
    return rate


def _scheduled(kind: str, value: str) -> ScheduledFault:
    meter, _, when = value.partition("@")
    if kind == "clock_jump":
        at, _, amount = when.partition(":")
    else:
        at, _, amount = when.partition("+")
    if not meter or not at or not amount:
        raise ValueError
    return ScheduledFault(kind, meter, float(at), float(amount))


@dataclass(slots=True)
class ReplyFault:
    """What the injector did to one reply."""

    data: bytes | None  # None: the reply is dropped
    extra_delay: float = 0.0


class FaultInjector:
    """Applies the rate faults of a spec to replies, with its own seeded random stream."""

    def __init__(self, spec: FaultSpec, seed: int) -> None:
        self.spec = spec
        self.counts: Counter[str] = Counter()
        self._rng = random.Random(seed)

    def apply(self, reply: bytes) -> ReplyFault:
        """Maybe damage, delay or drop one reply; every injected fault is counted."""
        rates = self.spec.rates
        if not rates:
            return ReplyFault(reply)
        roll = self._rng.random
        for kind in RATE_KINDS:
            if rates.get(kind) and roll() < rates[kind]:
                self.counts[kind] += 1
                return self._inject(kind, reply)
        return ReplyFault(reply)

    def _inject(self, kind: str, reply: bytes) -> ReplyFault:
        rng = self._rng
        if kind == "no_reply":
            return ReplyFault(None)
        if kind == "late":
            return ReplyFault(reply, self.spec.late_delay_s)
        if kind == "corrupt":
            damaged = bytearray(reply)
            damaged[-2] ^= 0xFF  # the checksum byte (DL/T 645) / CRC byte (Modbus RTU)
            return ReplyFault(bytes(damaged))
        if kind == "shift":
            return ReplyFault(self._shift(reply))
        if kind == "garbage":
            noise = bytes(rng.choice((0x00, 0x16, 0x68, 0xAA, 0xFF, rng.randrange(256))) for _ in range(5))
            return ReplyFault(noise + reply)
        start = len(reply) - len(reply.lstrip(b"\xfe"))  # damage the frame itself, not its preamble
        cut = rng.randrange(start + 1, len(reply))
        if kind == "garbage_inside":
            return ReplyFault(reply[:cut] + bytes(rng.randrange(256) for _ in range(3)) + reply[cut:])
        return ReplyFault(reply[:cut])

    def _shift(self, reply: bytes) -> bytes:
        """Move 1..9 between two bytes of the data field: the byte sum (the DL/T 645 checksum) holds."""
        start = len(reply) - len(reply.lstrip(b"\xfe")) + 10  # 68 A0..A5 68 C L, then the data
        end = len(reply) - 2  # CS 16
        if end - start < 2:
            return reply
        up, down = self._rng.sample(range(start, end), 2)
        amount = self._rng.randint(1, 9)
        damaged = bytearray(reply)
        damaged[up] = (damaged[up] + amount) & 0xFF
        damaged[down] = (damaged[down] - amount) & 0xFF
        return bytes(damaged)
