"""Faults of a simulated 1376.1 concentrator, parsed from a spec string and counted.

A spec is a comma-separated list: ``lost=0.1`` (rate of requests whose reply is lost),
``late=0.1`` with ``late_delay=3`` (replies sent that many seconds late, after the master's timeout),
``drop=30`` (drop the TCP connection 30 s after the start; repeatable), ``relogin=20`` (log in again
on the open connection at 20 s; repeatable), ``power_cut=10+20`` (the concentrator and its meters
lose mains at 10 s for 20 s: the connection drops, ERC 14 is raised on return), ``ee=#3`` (meter 3,
from 0, is never collected: its values are all EE), ``absent=#5`` (meter 5 is missing from the
archive), ``alarm=#2@5+3:meter_cover_open`` (meter 2's cover is open from 5 s for 3 s: an ERC record
when it opens and one when it closes; any kind of protocols.gdw1376.alarms). ``#N`` selectors may
be repeated (``ee=#1,ee=#2``). ``lost@N`` / ``late@N``: the reply to request N (counted from 0) is
lost / late.

Whether a reply is lost or late depends only on the seed and the request's index, never on timing
or on earlier requests: :meth:`ConcentratorFaults.fault_at` tells a test in advance.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from protocols.gdw1376.alarms import alarm_record

RATE_KINDS = ("lost", "late")
TIMED_KINDS = ("drop", "relogin")
METER_KINDS = ("ee", "absent")
KNOWN = (*RATE_KINDS, *TIMED_KINDS, *METER_KINDS, "power_cut", "alarm", "late_delay")


class ConcentratorFaultError(ValueError):
    """A concentrator fault spec that cannot be parsed."""


@dataclass(slots=True)
class ConcentratorFaults:
    """Parsed faults (see the module docstring) and the counts of those injected so far."""

    rates: dict[str, float] = field(default_factory=dict)
    late_delay_s: float = 3.0
    drops_at: list[float] = field(default_factory=list)
    relogins_at: list[float] = field(default_factory=list)
    power_cuts: list[tuple[float, float]] = field(default_factory=list)  # (at, duration)
    ee_meters: set[int] = field(default_factory=set)
    absent_meters: set[int] = field(default_factory=set)
    alarms: list[tuple[int, float, float, str]] = field(default_factory=list)  # (meter, at, duration, kind)
    at: dict[int, str] = field(default_factory=dict)  # request index -> lost | late
    counts: Counter[str] = field(default_factory=Counter)

    @classmethod
    def parse(cls, text: str) -> ConcentratorFaults:
        """Parse a spec; raises ConcentratorFaultError naming the offending item."""
        faults = cls()
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, value = item.partition("=")
            kind, at, index = item.partition("@")
            if not sep and at and kind in RATE_KINDS and index.isdigit():
                faults.at[int(index)] = kind
                continue
            if not sep or name not in KNOWN:
                raise ConcentratorFaultError(
                    f"fault item {item!r}: want NAME=VALUE, NAME one of {', '.join(KNOWN)}, "
                    "or lost@N / late@N"
                )
            try:
                faults._add(name, value)
            except ValueError:
                raise ConcentratorFaultError(f"bad value in fault item {item!r}") from None
        return faults

    def _add(self, name: str, value: str) -> None:
        if name in RATE_KINDS:
            rate = float(value)
            if not 0 <= rate <= 1:
                raise ValueError(value)
            self.rates[name] = rate
        elif name == "late_delay":
            self.late_delay_s = float(value)
        elif name == "drop":
            self.drops_at.append(float(value))
        elif name == "relogin":
            self.relogins_at.append(float(value))
        elif name == "alarm":
            where, _, kind = value.partition(":")
            meter, _, when = where.partition("@")
            at, plus, duration = when.partition("+")
            alarm_record(kind, 1, datetime(2000, 1, 1))  # a kind no ERC carries: ValueError
            if not meter.startswith("#") or not plus:
                raise ValueError(value)
            self.alarms.append((int(meter[1:]), float(at), float(duration), kind))
        elif name == "power_cut":
            at, plus, duration = value.partition("+")
            if not plus:
                raise ValueError(value)
            self.power_cuts.append((float(at), float(duration)))
        else:
            if not value.startswith("#"):
                raise ValueError(value)
            (self.ee_meters if name == "ee" else self.absent_meters).add(int(value[1:]))

    def fault_at(self, index: int, seed: int) -> str | None:
        """``lost``, ``late`` or None for the reply to request ``index`` under ``seed`` (not counted)."""
        if index in self.at:
            return self.at[index]
        rng = random.Random(f"{seed}:{index}")
        for kind in RATE_KINDS:
            rate = self.rates.get(kind)
            if rate and rng.random() < rate:
                return kind
        return None

    def reply_fault(self, index: int, seed: int) -> str | None:
        """:meth:`fault_at`, counted: the fault the reply to request ``index`` gets now."""
        kind = self.fault_at(index, seed)
        if kind is not None:
            self.counts[kind] += 1
        return kind
