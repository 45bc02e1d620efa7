"""Where a DL/T 645-2007 meter keeps the event records a utility watches: per event kind, the DI of
its occurrence count and the DIs of the n-th latest record (n = 1 … 10), by record layout.

- ``span``: one DI per record, start and end time (power down 03 11 00 nn; meter cover 03 30 0D nn,
  terminal cover 03 30 0E nn; constant magnetic field 03 35 00 nn, a State Grid 备案 item); meters
  whose records continue with energy snapshots have those fields after the two times.
- ``split``: start and end time at separate DIs of the per-phase event classes (DI3 10 loss of
  voltage, 13 phase failure, 1B reverse power flow; DI2 the phase, 00 for the whole meter; DI1 01
  start, 25 end; count at DI1 00, DI0 01).
- ``stamp``: one DI per record, time then operator code (programming 03 30 00 nn, meter clear
  03 30 01 nn, event clear 03 30 03 nn).
- ``switch``: the relay trip / close records (1D / 1E 00 FF nn).

Clock battery low is no record: it is bit 2 of status word 1 (04 00 05 01), a condition that holds
while the battery is low (:data:`STATUS_EVENTS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Layout = Literal["span", "split", "stamp", "switch"]
MAX_RECORDS = 10  # a meter keeps the last 10 records of a kind


@dataclass(frozen=True, slots=True)
class EventSource:
    """One event kind's count DI and record DIs."""

    count_di: str
    layout: Layout
    record: str  # DI without the occurrence byte (split: of the start time)
    end: str = ""  # split: DI of the end time without the occurrence byte

    def record_dis(self, occurrence: int) -> tuple[str, ...]:
        """The DIs to read for the ``occurrence``-th latest record (1 = the latest)."""
        if not 1 <= occurrence <= MAX_RECORDS:
            raise ValueError(f"occurrence {occurrence} outside 1..{MAX_RECORDS}")
        suffix = f"{occurrence:02X}"
        if self.layout == "split":
            return (self.record + suffix, self.end + suffix)
        return (self.record + suffix,)


def _split(di3: int, di2: int) -> EventSource:
    return EventSource(f"{di3:02X}{di2:02X}0001", "split", f"{di3:02X}{di2:02X}01", f"{di3:02X}{di2:02X}25")


PHASES = {"a": 1, "b": 2, "c": 3}
EVENT_SOURCES: dict[str, EventSource] = {
    "power_down": EventSource("03110000", "span", "031100"),
    "relay_trip": EventSource("1D000001", "switch", "1D00FF"),
    "relay_close": EventSource("1E000001", "switch", "1E00FF"),
    "meter_cover_open": EventSource("03300D00", "span", "03300D"),
    "terminal_cover_open": EventSource("03300E00", "span", "03300E"),
    "magnetic_interference": EventSource("03350000", "span", "033500"),
    **{f"voltage_loss_{p}": _split(0x10, n) for p, n in PHASES.items()},
    **{f"phase_failure_{p}": _split(0x13, n) for p, n in PHASES.items()},
    "reverse_power": _split(0x1B, 0x00),
    "programming": EventSource("03300000", "stamp", "033000"),
    "meter_clear": EventSource("03300100", "stamp", "033001"),
    "event_clear": EventSource("03300300", "stamp", "033003"),
}
# condition kinds read from a status word: kind -> (status word DI, the bit's name in the word)
STATUS_EVENTS: dict[str, tuple[str, str]] = {"clock_battery_low": ("04000501", "clock_battery_low")}
EVENT_KINDS: tuple[str, ...] = (*EVENT_SOURCES, *STATUS_EVENTS)
