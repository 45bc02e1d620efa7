"""The meter driver interface shared by DL/T 645 and Modbus meters: capabilities, results and errors.

:class:`MeterDriver` is what the engine, the control executor and the CLI may ask of any driver;
:class:`Capabilities` says which of its optional parts (memory, events, relay, clock) a meter of a
given protocol and model offers, so callers decide from the driver, never from a protocol name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol

from headend.vocabulary import ProfileSource, SwitchOperation, SwitchStatus
from protocols.models import UnknownModel, load_model_data


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
        "year_zones": "too many seasons",
        "day_slots": "too many daily tables or switch points",
        "tariffs": "too many tariffs",
    }

    def __init__(self, flags: list[str]) -> None:
        self.flags = flags
        super().__init__("meter refused: " + ", ".join(self.FLAG_TEXT.get(f, f) for f in flags))


class LineError(DriverError):
    """Only damaged frames came back (checksum errors, garbage)."""


class NotSupported(DriverError):
    """The meter or its model does not offer this quantity or function."""


@dataclass(slots=True)
class ProfileRecord:
    """An interval read from the meter's memory: interval end (UTC), values, and where it came from."""

    ts: datetime
    values: dict[str, float]
    source: ProfileSource


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

    status: SwitchStatus
    action: SwitchOperation
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


@dataclass(frozen=True, slots=True)
class Capabilities:
    """The optional parts of a meter a driver can use; reads of quantities are always offered."""

    memory: bool = False  # load profile / daily freeze to backfill gaps from
    events: bool = False  # standard event records (power down, relay trip and close)
    relay: bool = False  # remote disconnect and reconnect, confirmed by reading the relay back
    clock: bool = False  # a clock to read and correct


class MeterDriver(Protocol):
    """One meter on one bus. Parts outside ``capabilities`` raise :class:`NotSupported`."""

    address: str
    capabilities: Capabilities
    unsupported: dict[str, str]  # quantities of the last ``read`` the meter did not give, and why
    # energy registers of the last ``read`` not believed because they read below their last accepted
    # value: quantity -> (that value, the value read); never in the result
    went_back: dict[str, tuple[float, float]]
    utc_offset: timedelta  # the meter's local time minus UTC (its clock and profile stamps)

    @property
    def last_rtt_s(self) -> float | None:
        """The round trip of the last exchange (None before the first)."""
        ...

    async def read(self, quantities: list[str]) -> dict[str, float]:
        """Canonical quantities; the ones the meter does not offer land in ``unsupported``."""
        ...

    async def read_profile(
        self, start: datetime, end: datetime, quantities: Sequence[str] | None = None
    ) -> list[ProfileRecord]:
        """Records in [start, end]; ``quantities`` is what the caller wants (None: everything the
        meter keeps); a driver may give more, and reads less when that saves exchanges."""
        ...

    async def read_events(self, kinds: list[str]) -> list[EventRecord]: ...

    async def read_clock(self) -> datetime: ...

    async def set_clock(self, *, broadcast: bool) -> None:
        """Set the meter's clock to now (a broadcast or an addressed write); the policy is the engine's."""
        ...

    async def relay_state(self) -> RelayState: ...

    async def switch(self, action: SwitchOperation, *, operator: str) -> SwitchResult:
        """Operate the relay; the result is ``confirmed`` only after a read-back shows the state."""
        ...


def load_model(name: str) -> dict[str, Any]:
    """A meter model's data (:func:`protocols.models.load_model_data`); unknown names are NotSupported."""
    try:
        return load_model_data(name)
    except UnknownModel as exc:
        raise NotSupported(str(exc)) from None
