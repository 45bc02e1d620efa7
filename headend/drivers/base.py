"""The meter driver interface shared by DL/T 645 and Modbus meters: results and errors."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

MODELS_DIR = Path(__file__).resolve().parents[2] / "config" / "models"


class DriverError(Exception):
    """Base of the errors a driver raises; the message is one line for operators."""


class MeterTimeout(DriverError):
    """The meter did not answer (after the channel's retries)."""


class MeterRefused(DriverError):
    """The meter answered with an abnormal reply (its error flags are kept)."""

    FLAG_TEXT: ClassVar[dict[str, str]] = {
        "password": "password error",
        "no_data": "no requested data",
        "di_error": "data identifier error",
        "other": "not allowed now",
        "illegal_data": "illegal data",
        "baud": "baud rate cannot be changed",
    }

    def __init__(self, flags: list[str]) -> None:
        self.flags = flags
        super().__init__("meter refused: " + ", ".join(self.FLAG_TEXT.get(f, f) for f in flags))


class LineError(DriverError):
    """Only damaged frames came back (checksum errors, garbage)."""


class NotSupported(DriverError):
    """The meter or its model does not offer this quantity or function."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """Meter password and level for writes and relay control; never printed."""

    level: int
    password: str = field(repr=False)

    def __str__(self) -> str:
        return f"level {self.level:02d} password ******"


@dataclass(slots=True)
class ProfileRecord:
    """An interval read from the meter's memory: interval end (UTC), values, and where it came from."""

    ts: datetime
    values: dict[str, float]
    source: str  # "load_profile" | "daily_freeze"


@dataclass(slots=True)
class EventRecord:
    """A meter event record (power down, relay trip or close), times in UTC."""

    kind: str  # power_down | relay_trip | relay_close
    occurred_at: datetime
    ended_at: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RelayState:
    """The relay as the meter reports it."""

    open: bool
    command_open: bool | None = None
    keep_power: bool = False
    pre_trip_alarm: bool = False
    raw: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "open": self.open,
            "command_open": self.command_open,
            "keep_power": self.keep_power,
            "pre_trip_alarm": self.pre_trip_alarm,
            "raw": self.raw,
        }


@dataclass(slots=True)
class SwitchResult:
    """The outcome of a relay command: confirmed only by reading the state back."""

    status: str  # confirmed | refused | unconfirmed | failed
    action: str
    state: RelayState | None = None
    reason: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "action": self.action,
            "reason": self.reason,
            "state": self.state.to_json() if self.state else None,
            "evidence": self.evidence,
        }


@dataclass(slots=True)
class ClockResult:
    """A clock check (and correction) of one meter."""

    meter_time: datetime  # UTC
    drift: timedelta  # meter minus true time
    action: str  # none | broadcast | write | skipped
    reason: str = ""
    drift_after: timedelta | None = None


def clock_write_blocked(local: datetime, interval: timedelta, guard: timedelta) -> str:
    """Why a clock must not be set at device-local time ``local`` now ("" = it may): never within five
    minutes of midnight (the daily freeze) nor within ``guard`` of an interval boundary."""
    if local.time() >= time(23, 55) or local.time() < time(0, 5):
        return "too close to midnight"
    since_boundary = (local - datetime.min) % interval
    if since_boundary < guard or interval - since_boundary < guard:
        return "too close to an interval boundary"
    return ""


@lru_cache(maxsize=256)
def load_model(name: str) -> dict[str, Any]:
    """A meter model data file from config/models (``<name>.json``), read once per process."""
    path = MODELS_DIR / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        known = sorted(p.stem for p in MODELS_DIR.glob("*.json"))
        raise NotSupported(f"unknown meter model {name!r}; known: {', '.join(known)}") from None
