"""Meter drivers: one interface over DL/T 645 (2007, 1997) and Modbus meters.

``make_driver(protocol, channel, address, model, secrets)`` builds the driver the engine and the CLI
use: ``read(quantities)``, ``read_profile(start, end)``, ``read_clock()``, ``set_clock(broadcast=...)``,
``relay_state()``, ``switch(action, operator=...)``. ``secrets`` is a ``Credentials``, an object
with ``credentials_for(address)``, or None.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from headend.drivers.base import (
    Credentials,
    DriverError,
    EventRecord,
    LineError,
    MeterRefused,
    MeterTimeout,
    NotSupported,
    ProfileRecord,
    RelayState,
    SwitchResult,
)
from headend.drivers.dlt645 import Dlt645Driver
from headend.drivers.modbus import ModbusDriver

EDITIONS = {"dlt645": 2007, "dlt645-2007": 2007, "dlt645-1997": 1997}


def _credentials(secrets: Any, address: str) -> Credentials | None:
    """``secrets`` may be Credentials, a MeterSecrets, a secrets file path, or None (environment only)."""
    if isinstance(secrets, Credentials):
        return secrets
    if secrets is None or isinstance(secrets, str | Path):
        from headend.secrets import MeterSecrets  # headend.secrets imports drivers.base: load it lazily

        secrets = MeterSecrets.load(secrets)
    return secrets.credentials_for(address)


def make_driver(
    protocol: str, channel: Any, address: Any, model: str | None = None, secrets: Any = None, **options: Any
) -> Dlt645Driver | ModbusDriver:
    """The driver for one meter on ``channel``."""
    if protocol == "modbus":
        return ModbusDriver(channel, int(address), model=model or "eastron_sdm120", **options)
    if protocol in EDITIONS:
        return Dlt645Driver(
            channel,
            str(address),
            edition=EDITIONS[protocol],
            model=model,
            credentials=_credentials(secrets, str(address)),
            **options,
        )
    raise NotSupported(f"no driver for protocol {protocol!r} yet (supported: {', '.join(EDITIONS)})")


__all__ = [
    "Credentials",
    "Dlt645Driver",
    "DriverError",
    "EventRecord",
    "LineError",
    "MeterRefused",
    "MeterTimeout",
    "ModbusDriver",
    "NotSupported",
    "ProfileRecord",
    "RelayState",
    "SwitchResult",
    "make_driver",
]
