"""Fault injection for simulated buses, planned in advance from a seed and counted.

A spec is a comma-separated list, e.g.
``no_reply=0.05,late=0.02,corrupt=0.02,garbage=0.02,garbage_inside=0.01,truncate=0.01`` (rates per
reply; ``shift`` moves 1..9 units between two bytes of a DL/T 645 reply's data field, a corruption
its additive checksum cannot see), ``KIND@N`` (reply N of the bus, counted from 0, gets fault KIND:
``no_reply@0,corrupt@3``), plus schedules relative to the bus start: ``offline=ADDR@10+30`` (no
answers from second 10 for 30 s), ``power_outage=ADDR@20+15`` (no answers, no consumption, a
power-down record), ``clock_jump=ADDR@5:+600`` (the meter clock jumps by +600 s). ``ADDR`` is a
meter address, ``#N`` (the N-th meter, from 0) or ``*`` (all meters). ``late_delay=3`` sets how
late a late reply is. Meter events (DL/T 645 buses): ``KIND=ADDR@AT+DURATION`` with KIND one of
:data:`METER_EVENT_FAULTS` (``meter_cover_open=#0@5+20``: the cover is open from second 5 for 20 s,
then its record holds both times; ``programming=#1@3+0``: a programming record at second 3;
``meter_clear=#2@8+0``: at second 8 the meter's energy registers go back to zero, with its clear record;
``clock_battery_low=#0@2+60``: status word 1 flags the clock battery for 60 s).

What happens to a reply depends only on the seed and the reply's index on the bus, never on what
happened to earlier replies or on timing: :meth:`FaultPlan.fault_at` tells a test in advance which
reply is dropped, delayed or damaged (and :meth:`FaultPlan.faults_in` lists them for a range).
Relay control (0x1C) faults count the meter's control frames from 1: ``control_abnormal=ADDR@1+2``
(its 1st and 2nd control frames are carried out, then answered with an abnormal reply) and
``control_silent=ADDR@1+1`` (carried out, never answered).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from protocols.dlt645.events import EVENT_KINDS

RATE_KINDS = ("no_reply", "late", "corrupt", "garbage", "garbage_inside", "truncate", "shift")
SCHEDULE_KINDS = ("offline", "power_outage", "clock_jump")
CONTROL_KINDS = ("control_abnormal", "control_silent")
# event records a meter keeps that a fault plan can make happen (power downs come from power_outage,
# relay records from switching)
METER_EVENT_FAULTS = tuple(k for k in EVENT_KINDS if k not in ("power_down", "relay_trip", "relay_close"))
ITEM_KINDS = (*RATE_KINDS, *SCHEDULE_KINDS, *CONTROL_KINDS, *METER_EVENT_FAULTS, "late_delay")


class FaultSpecError(ValueError):
    """A fault spec that cannot be parsed."""


def reply_rng(seed: int, index: int) -> random.Random:
    """The random stream of reply ``index`` under ``seed``: independent of every other reply."""
    return random.Random(f"{seed}:{index}")


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
    control: list[ScheduledFault] = field(default_factory=list)  # at_s: first control frame, amount: how many
    events: list[ScheduledFault] = field(default_factory=list)  # meter events (DL/T 645 buses)
    late_delay_s: float = 3.0
    at: dict[int, str] = field(default_factory=dict)  # reply index -> rate kind (``KIND@N`` items)

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """Parse a spec string; raises FaultSpecError with the offending item."""
        spec = cls()
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, value = item.partition("=")
            if not sep and "@" in item:
                spec.at.update([_at(item)])
                continue
            if not sep:
                raise FaultSpecError(f"fault item {item!r} lacks '=' (or '@' for one reply)")
            if name not in ITEM_KINDS:
                known = ", ".join(ITEM_KINDS)
                raise FaultSpecError(f"unknown fault {name!r}; known: {known}")
            try:
                if name in RATE_KINDS:
                    spec.rates[name] = _rate(value)
                elif name == "late_delay":
                    spec.late_delay_s = float(value)
                elif name in CONTROL_KINDS:
                    spec.control.append(_control(name, value))
                elif name in METER_EVENT_FAULTS:
                    spec.events.append(_scheduled(name, value))
                else:
                    spec.schedule.append(_scheduled(name, value))
            except ValueError:
                raise FaultSpecError(f"bad value in fault item {item!r}") from None
        return spec


def _at(item: str) -> tuple[int, str]:
    kind, _, index = item.partition("@")
    if kind not in RATE_KINDS:
        raise FaultSpecError(f"fault item {item!r}: KIND@N takes one of {', '.join(RATE_KINDS)}")
    if not index.isdigit():
        raise FaultSpecError(f"fault item {item!r}: N must be a reply index (0, 1, ...)")
    return int(index), kind


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


def _control(kind: str, value: str) -> ScheduledFault:
    fault = _scheduled(kind, value)
    if fault.at_s < 1 or fault.amount < 1 or not fault.at_s.is_integer() or not fault.amount.is_integer():
        raise ValueError(value)
    return fault


@dataclass(slots=True)
class ReplyFault:
    """What the injector did to one reply."""

    data: bytes | None  # None: the reply is dropped
    extra_delay: float = 0.0


class FaultPlan:
    """Which rate fault, if any, each reply of a bus gets: explicit ``KIND@N`` items first, then one
    roll per kind (in :data:`RATE_KINDS` order) on the reply's own seeded stream."""

    def __init__(self, spec: FaultSpec, seed: int) -> None:
        self.spec = spec
        self.seed = seed

    def fault_at(self, index: int) -> str | None:
        """The fault reply ``index`` gets (None: delivered intact)."""
        if index in self.spec.at:
            return self.spec.at[index]
        rates = self.spec.rates
        if not rates:
            return None
        rng = reply_rng(self.seed, index)
        for kind in RATE_KINDS:
            if rates.get(kind) and rng.random() < rates[kind]:
                return kind
        return None

    def faults_in(self, start: int, stop: int) -> dict[int, str]:
        """``{index: kind}`` of the faulty replies in ``range(start, stop)``."""
        planned = ((index, self.fault_at(index)) for index in range(start, stop))
        return {index: kind for index, kind in planned if kind is not None}


class FaultInjector:
    """Applies a :class:`FaultPlan` to the bus's replies in order; every injected fault is counted."""

    def __init__(self, spec: FaultSpec, seed: int) -> None:
        self.spec = spec
        self.plan = FaultPlan(spec, seed)
        self.counts: Counter[str] = Counter()
        self.replies = 0  # index of the next reply

    def apply(self, reply: bytes) -> ReplyFault:
        """Drop, delay or damage this reply as planned for its index."""
        index = self.replies
        self.replies += 1
        kind = self.plan.fault_at(index)
        if kind is None:
            return ReplyFault(reply)
        self.counts[kind] += 1
        return self._inject(kind, reply, reply_rng(self.plan.seed, index))

    def _inject(self, kind: str, reply: bytes, rng: random.Random) -> ReplyFault:
        if kind == "no_reply":
            return ReplyFault(None)
        if kind == "late":
            return ReplyFault(reply, self.spec.late_delay_s)
        if kind == "corrupt":
            damaged = bytearray(reply)
            damaged[-2] ^= 0xFF  # the checksum byte (DL/T 645) / CRC byte (Modbus RTU)
            return ReplyFault(bytes(damaged))
        if kind == "shift":
            return ReplyFault(self._shift(reply, rng))
        if kind == "garbage":
            noise = bytes(rng.choice((0x00, 0x16, 0x68, 0xAA, 0xFF, rng.randrange(256))) for _ in range(5))
            return ReplyFault(noise + reply)
        start = len(reply) - len(reply.lstrip(b"\xfe"))  # damage the frame itself, not its preamble
        cut = rng.randrange(start + 1, len(reply))
        if kind == "garbage_inside":
            return ReplyFault(reply[:cut] + bytes(rng.randrange(256) for _ in range(3)) + reply[cut:])
        return ReplyFault(reply[:cut])

    def _shift(self, reply: bytes, rng: random.Random) -> bytes:
        """Move 1..9 between two bytes of the data field: the byte sum (the DL/T 645 checksum) holds."""
        start = len(reply) - len(reply.lstrip(b"\xfe")) + 10  # 68 A0..A5 68 C L, then the data
        end = len(reply) - 2  # CS 16
        if end - start < 2:
            return reply
        up, down = rng.sample(range(start, end), 2)
        amount = rng.randint(1, 9)
        damaged = bytearray(reply)
        damaged[up] = (damaged[up] + amount) & 0xFF
        damaged[down] = (damaged[down] - amount) & 0xFF
        return bytes(damaged)
