"""A total group (总加组) of a Q/GDW 1376.1 concentrator, read like a meter: its AFN 0D curves.

A total group is the concentrator's sum of some of its measuring points (AFN 04 F14: each member
added or subtracted, forward or reverse). The inventory names one as a "meter" of protocol
``gdw1376-group`` on the concentrator's channel, address = the group number (1..8, the Pn of its
curves); its readings are the group's own quantities (:data:`GROUP_QUANTITIES`): F73 total active
power ``group_power_kw``, F74 reactive power ``group_reactive_power_kvar`` (A.2, three significant
digits), F75 active energy of the interval ``group_energy_kwh``, F76 reactive
``group_reactive_energy_kvarh`` (A.3, whole kWh / kvarh). They come from the backfill
(:meth:`ConcentratorGroupDriver.read_profile`, one multi-unit request per day); a polled read gives
nothing (the current total-group values, AFN 0C F17 / F18, are not read): every quantity is reported
unsupported and the interval is left to the backfill.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from headend.drivers.base import (
    Capabilities,
    EventRecord,
    NotSupported,
    ProfileRecord,
    RelayState,
    SwitchResult,
)
from headend.drivers.gdw1376 import read_curves
from headend.transport.concentrator import ConcentratorLink
from headend.vocabulary import SwitchOperation

GROUP_PROTOCOL = "gdw1376-group"
GROUP_MODEL = "gdw1376-total-group"
GROUP_QUANTITIES = {  # total-group curve Fn -> the group's quantity
    73: "group_power_kw",
    74: "group_reactive_power_kvar",
    75: "group_energy_kwh",
    76: "group_reactive_energy_kvarh",
}
MAX_GROUP = 8
CAPABILITIES = Capabilities(memory=True)
FROM_CURVES = "a total group's values come from its AFN 0D F73..F76 curves (backfill), not a polled read"


class ConcentratorGroupDriver:
    """Total group ``number`` of the concentrator behind ``link``."""

    capabilities: Capabilities = CAPABILITIES

    def __init__(self, link: ConcentratorLink, number: int) -> None:
        if not 1 <= number <= MAX_GROUP:
            raise NotSupported(f"total group {number} of concentrator {link.key} is not 1..{MAX_GROUP}")
        self.link = link
        self.number = number
        self.address = str(number)
        self.utc_offset: timedelta = link.utc_offset
        self.unsupported: dict[str, str] = {}
        self.went_back: dict[str, tuple[float, float]] = {}  # no register guard here

    @property
    def last_rtt_s(self) -> float | None:
        return None

    async def read(self, quantities: list[str]) -> dict[str, float]:
        """Nothing: see the module docstring (each quantity lands in ``unsupported``)."""
        self.unsupported = {q: FROM_CURVES for q in quantities}
        return {}

    async def read_profile(
        self, start: datetime, end: datetime, quantities: Sequence[str] | None = None
    ) -> list[ProfileRecord]:
        """The group's 15-minute points in [start, end] of the curves whose quantities are wanted."""
        wanted = set(GROUP_QUANTITIES.values()) if quantities is None else set(quantities)
        fns = tuple(fn for fn, name in GROUP_QUANTITIES.items() if name in wanted)
        if not fns:
            return []
        named = {fn: (GROUP_QUANTITIES[fn], 1.0) for fn in fns}
        points = await read_curves(self.link, self.number, start, end, (fns,), named)
        return [ProfileRecord(ts, values, "load_profile") for ts, values in sorted(points.items())]

    async def read_events(self, kinds: list[str]) -> list[EventRecord]:
        raise NotSupported("a total group keeps no event records")

    async def read_clock(self) -> datetime:
        raise NotSupported("a total group has no clock (the concentrator's is checked by its duties)")

    async def set_clock(self, *, broadcast: bool) -> None:
        raise NotSupported("a total group has no clock")

    async def relay_state(self) -> RelayState:
        raise NotSupported("a total group has no relay")

    async def switch(self, action: SwitchOperation, *, operator: str) -> SwitchResult:
        raise NotSupported("a total group has no relay")
