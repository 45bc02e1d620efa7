"""Meter drivers: one interface over DL/T 645 (2007, 1997) and Modbus meters.

``make_driver(protocol, channel, address, model, secrets)`` builds the driver the engine and the CLI
use; every driver is a :class:`~headend.drivers.base.MeterDriver`: ``read(quantities)``,
``read_profile(start, end)``, ``read_clock()``, ``set_clock(broadcast=...)``, ``relay_state()``,
``switch(action, operator=...)``. ``capabilities_for(protocol, model)`` tells, before any driver
exists, which optional parts (memory, events, relay, clock) such a meter offers. ``secrets`` is a
``Credentials``, an object with ``credentials_for(address)``, a secrets file path, or None.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Protocol

from headend.drivers.base import (
    Capabilities,
    Credentials,
    DriverError,
    EventRecord,
    LineError,
    MeterDriver,
    MeterRefused,
    MeterTimeout,
    NotSupported,
    ProfileRecord,
    RelayState,
    SwitchResult,
)
from headend.drivers.dlt645 import Dlt645Driver
from headend.drivers.modbus import ModbusDriver
from headend.transport import Bus, FrameBus, ModbusChannel
from protocols.modbus import load_modbus_model

EDITIONS = {"dlt645": 2007, "dlt645-2007": 2007, "dlt645-1997": 1997}
DEFAULT_MODBUS_MODEL = "eastron_sdm120"


class CredentialSource(Protocol):
    """Where meter passwords come from (``headend.secrets.MeterSecrets``)."""

    def credentials_for(self, address: str) -> Credentials | None: ...


Secrets = Credentials | CredentialSource | str | Path | None


def _credentials(secrets: Secrets, address: str) -> Credentials | None:
    """``secrets`` may be Credentials, a MeterSecrets, a secrets file path, or None (environment only)."""
    if isinstance(secrets, Credentials):
        return secrets
    if secrets is None or isinstance(secrets, str | Path):
        from headend.secrets import MeterSecrets  # headend.secrets imports drivers.base: load it lazily

        secrets = MeterSecrets.load(secrets)
    return secrets.credentials_for(address)


def make_driver(
    protocol: str,
    channel: Bus,
    address: str | int | None,
    model: str | None = None,
    secrets: Secrets = None,
    **options: Any,
) -> Dlt645Driver | ModbusDriver:
    """The driver for one meter on ``channel``; NotSupported when the channel cannot carry the protocol."""
    if address is None:
        needed = "a unit id" if protocol == "modbus" else "an address"
        raise NotSupported(f"a {protocol} meter needs {needed}")
    if protocol == "modbus":
        if not isinstance(channel, ModbusChannel | FrameBus):
            raise NotSupported(f"{channel.label} cannot carry Modbus requests")
        return ModbusDriver(channel, int(address), model=model or DEFAULT_MODBUS_MODEL, **options)
    if protocol in EDITIONS:
        if not isinstance(channel, FrameBus):
            raise NotSupported(f"{protocol} needs a raw serial:// or tcp:// channel, not {channel.label}")
        return Dlt645Driver(
            channel,
            str(address),
            edition=EDITIONS[protocol],
            model=model,
            credentials=_credentials(secrets, str(address)),
            **options,
        )
    raise NotSupported(f"no driver for protocol {protocol!r} yet (supported: {', '.join(EDITIONS)})")


@cache
def capabilities_for(protocol: str, model: str | None = None) -> Capabilities:
    """What a meter of ``protocol`` and ``model`` offers beyond reads (the engine plans jobs with it)."""
    if protocol == "modbus":
        return ModbusDriver.capabilities_of(load_modbus_model(model or DEFAULT_MODBUS_MODEL))
    if protocol in EDITIONS:
        return Dlt645Driver.capabilities_of(EDITIONS[protocol])
    raise NotSupported(f"no driver for protocol {protocol!r} yet (supported: {', '.join(EDITIONS)})")


__all__ = [
    "Capabilities",
    "Credentials",
    "Dlt645Driver",
    "DriverError",
    "EventRecord",
    "LineError",
    "MeterDriver",
    "MeterRefused",
    "MeterTimeout",
    "ModbusDriver",
    "NotSupported",
    "ProfileRecord",
    "RelayState",
    "SwitchResult",
    "capabilities_for",
    "make_driver",
]
