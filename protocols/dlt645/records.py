"""Typed records of the structured values a driver acts on: the relay status word and event records.

The decoder yields plain values (dicts from bit words and record structures). These functions turn
the ones a driver acts on into frozen records, checking the shape the data identifier promises, so
a driver never indexes a dict it did not expect; a value of the wrong shape is a ``PayloadError``.
Times stay meter-local, as decoded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from protocols.dlt645.errors import PayloadError

RELAY_STATUS_DI = "04000503"  # status word 3


@dataclass(frozen=True, slots=True)
class RelayStatus:
    """Status word 3: bit 4 relay open, bit 6 commanded open, bit 7 pre-trip alarm, bit 12 keep-power."""

    relay_open: bool
    command_open: bool
    keep_power: bool
    pre_trip_alarm: bool
    raw: int


@dataclass(frozen=True, slots=True)
class PowerDownRecord:
    """One power-down event (03 11 00 nn): when supply was lost and, once back, when it returned."""

    start: datetime
    end: datetime | None


@dataclass(frozen=True, slots=True)
class SwitchRecord:
    """One relay trip or close event (1D / 1E 00 FF nn): when, and the rest of the record."""

    time: datetime
    details: dict[str, Any] = field(default_factory=dict)  # operator code, registers at the switch


def _mapping(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PayloadError(f"{what}: expected a record, got {type(value).__name__}")
    return value


def _flag(record: Mapping[str, Any], name: str, what: str) -> bool:
    flag = record.get(name)
    if not isinstance(flag, bool):
        raise PayloadError(f"{what}: {name} missing or not a bit")
    return flag


def _time(record: Mapping[str, Any], name: str, what: str) -> datetime:
    when = record.get(name)
    if not isinstance(when, datetime):
        raise PayloadError(f"{what}: {name} missing or not a time")
    return when


def relay_status(value: object) -> RelayStatus:
    """The decoded value of status word 3 as a :class:`RelayStatus`."""
    what = f"status word 3 ({RELAY_STATUS_DI})"
    word = _mapping(value, what)
    raw = word.get("raw")
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise PayloadError(f"{what}: raw word missing")
    return RelayStatus(
        relay_open=_flag(word, "relay_open", what),
        command_open=_flag(word, "relay_command_open", what),
        keep_power=_flag(word, "keep_power", what),
        pre_trip_alarm=_flag(word, "pre_trip_alarm", what),
        raw=raw,
    )


def power_down_record(value: object) -> PowerDownRecord:
    """The decoded value of a power-down record as a :class:`PowerDownRecord`."""
    record = _mapping(value, "power-down record")
    start = _time(record, "start", "power-down record")
    end = None if record.get("end") is None else _time(record, "end", "power-down record")
    return PowerDownRecord(start, end)


def stamp_record(value: object) -> SwitchRecord:
    """The decoded value of a programming / meter clear / event clear record: its time and operator."""
    record = _mapping(value, "event record")
    details = {k: v for k, v in record.items() if k != "time"}
    return SwitchRecord(_time(record, "time", "event record"), details)


def event_time(value: object) -> datetime:
    """The decoded value of a start or end time DI of an event record."""
    if not isinstance(value, datetime):
        raise PayloadError(f"event time: expected a time, got {type(value).__name__}")
    return value


def switch_record(value: object) -> SwitchRecord:
    """The decoded value of a relay trip or close record as a :class:`SwitchRecord`."""
    record = _mapping(value, "switch record")
    return SwitchRecord(
        _time(record, "time", "switch record"), {k: v for k, v in record.items() if k != "time"}
    )
