"""The meter alarms a concentrator reports in its event records (AFN 0E ERC codes), mapped to the
event kinds a DL/T 645-2007 meter keeps itself (protocols.dlt645.events), so that both paths store
the same kinds. ERC 14 (the terminal's own power off / on) stays decoded as :class:`PowerEvent`.

Layout of the mapped records: time (A.15, 5 bytes), then the measurement point (2 bytes, little
endian: D0–D11 Pn, D15 1 = the condition started, 0 = it ended); ERC 10 (voltage circuit abnormal)
follows with one byte: D0–D2 phases A/B/C, D6–D7 the kind (01 phase failure, 10 loss of voltage).
Bytes after these (counts, energies, voltages) are kept raw, not interpreted.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from construct import ConstructError

from protocols.gdw1376.formats import A15

ERC_VOLTAGE_CIRCUIT = 10
# ERC -> event kind for the alarms that carry no phase
ERC_KINDS = {37: "meter_cover_open", 38: "terminal_cover_open", 40: "magnetic_interference"}
VOLTAGE_KINDS = {0b01: "phase_failure", 0b10: "voltage_loss"}
PHASES = "abc"
MAPPED_ERCS = frozenset({ERC_VOLTAGE_CIRCUIT, *ERC_KINDS})


@dataclass(frozen=True, slots=True)
class MeterAlarm:
    """One meter condition out of an ERC record: its kind, the meter's Pn, when (terminal-local)."""

    kind: str
    pn: int
    at: dt.datetime
    started: bool


def meter_alarms(erc: int, data: bytes) -> list[MeterAlarm]:
    """The alarms of one ERC record (empty for ERCs not mapped, or records too short to hold them)."""
    if erc not in MAPPED_ERCS or len(data) < 7 + (erc == ERC_VOLTAGE_CIRCUIT):
        return []
    try:
        at = A15.parse(data[:5])
    except (ConstructError, ValueError):  # an unreadable time maps nothing
        return []
    if not isinstance(at, dt.datetime):
        return []
    point = int.from_bytes(data[5:7], "little")
    pn, started = point & 0x0FFF, bool(point & 0x8000)
    if erc != ERC_VOLTAGE_CIRCUIT:
        return [MeterAlarm(ERC_KINDS[erc], pn, at, started)]
    flags = data[7]
    kind = VOLTAGE_KINDS.get(flags >> 6)
    if kind is None:
        return []
    return [MeterAlarm(f"{kind}_{p}", pn, at, started) for bit, p in enumerate(PHASES) if flags >> bit & 1]


def alarm_record(kind: str, pn: int, at: dt.datetime, *, started: bool = True) -> tuple[int, bytes]:
    """``(erc, data)`` of an ERC record reporting ``kind`` (a simulator's concentrator builds it)."""
    head = A15.build(at) + (pn | (0x8000 if started else 0)).to_bytes(2, "little")
    for erc, mapped in ERC_KINDS.items():
        if kind == mapped:
            return erc, head
    name, _, phase = kind.rpartition("_")
    codes = {v: k for k, v in VOLTAGE_KINDS.items()}
    if name not in codes or phase not in PHASES:
        raise ValueError(f"no ERC carries {kind!r}")
    return ERC_VOLTAGE_CIRCUIT, head + bytes([codes[name] << 6 | 1 << PHASES.index(phase)])
