"""Meter drivers: one interface over DL/T 645 (2007, 1997) and Modbus meters.

``make_driver(protocol, channel, address, model, secrets)`` builds the driver the engine and the CLI
use: ``read(quantities)``, ``read_profile(start, end)``, ``read_clock()``, ``sync_clock(now)``,
``relay_state()``, ``switch(action, operator=...)``. ``secrets`` is a ``Credentials``, an object
with ``credentials_for(address)``, or None.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from headend.drivers.base import (
    ClockResult,
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
from headend.drivers.gdw1376 import ConcentratorMeterDriver
from headend.drivers.modbus import ModbusDriver
from headend.transport.concentrator import ConcentratorLink

EDITIONS = {"dlt645": 2007, "dlt645-2007": 2007, "dlt645-1997": 1997}


def _secrets(secrets: Any) -> Any:
    """``secrets`` may be Credentials, a MeterSecrets, a secrets file path, or None (environment only)."""
    if secrets is None or isinstance(secrets, str | Path):
        from headend.secrets import MeterSecrets  # headend.secrets imports drivers.base: load it lazily

        return MeterSecrets.load(secrets)
    return secrets


def _credentials(secrets: Any, address: str) -> Credentials | None:
    if isinstance(secrets, Credentials):
        return secrets
    return _secrets(secrets).credentials_for(address)


def make_driver(
    protocol: str, channel: Any, address: Any, model: str | None = None, secrets: Any = None, **options: Any
) -> Dlt645Driver | ModbusDriver | ConcentratorMeterDriver:
    """The driver for one meter on ``channel``; behind a concentrator (a ConcentratorLink) the meter
    needs the ``port`` option (and ``pn`` for native reads); the concentrator's PW comes from ``secrets``."""
    if isinstance(channel, ConcentratorLink):
        if protocol not in EDITIONS or options.get("port") is None:
            raise NotSupported(
                f"a meter behind concentrator {channel.key} needs a DL/T 645 protocol and port"
            )
        store = _secrets(secrets)
        pw_for = getattr(store, "concentrator_pw", None)
        if pw_for is not None:
            channel.set_pw(pw_for(channel.key))
        return ConcentratorMeterDriver(
            channel,
            str(address),
            pn=options.pop("pn", None),
            port=int(options.pop("port")),
            edition=EDITIONS[protocol],
            model=model,
            credentials=_credentials(store, str(address)),
            **options,
        )
    if protocol == "modbus":
        return ModbusDriver(channel, int(address), model=model or "eastron_sdm120")
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
    "ClockResult",
    "ConcentratorMeterDriver",
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
