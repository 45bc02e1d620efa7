"""Meter drivers: one interface over DL/T 645 (2007, 1997) and Modbus meters, direct or behind a
Q/GDW 1376.1 concentrator.

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
from typing import Any, Protocol, runtime_checkable

from headend.drivers.base import (
    Capabilities,
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
from headend.drivers.gdw1376 import ConcentratorMeterDriver
from headend.drivers.gdw1376_group import GROUP_PROTOCOL, ConcentratorGroupDriver
from headend.drivers.modbus import ModbusDriver
from headend.secrets import Credentials, MeterSecrets
from headend.transport import Bus, FrameBus, ModbusChannel
from headend.transport.concentrator import ConcentratorLink
from protocols.modbus import load_modbus_model

EDITIONS = {"dlt645": 2007, "dlt645-2007": 2007, "dlt645-1997": 1997}
DEFAULT_MODBUS_MODEL = "eastron_sdm120"


class CredentialSource(Protocol):
    """Where meter passwords come from (``headend.secrets.MeterSecrets``)."""

    def credentials_for(self, address: str) -> Credentials | None: ...


@runtime_checkable
class PwSource(Protocol):
    """Where concentrator PWs come from (``headend.secrets.MeterSecrets``)."""

    def concentrator_pw(self, key: str) -> bytes | None: ...


Secrets = Credentials | CredentialSource | str | Path | None


def _source(secrets: Secrets) -> Credentials | CredentialSource:
    """``secrets`` may be Credentials, a MeterSecrets, a secrets file path, or None (environment only)."""
    if secrets is None or isinstance(secrets, str | Path):
        return MeterSecrets.load(secrets)
    return secrets


def _credentials(secrets: Secrets, address: str) -> Credentials | None:
    source = _source(secrets)
    return source if isinstance(source, Credentials) else source.credentials_for(address)


def make_driver(
    protocol: str,
    channel: Bus,
    address: str | int | None,
    model: str | None = None,
    secrets: Secrets = None,
    **options: Any,
) -> MeterDriver:
    """The driver for one meter on ``channel``; NotSupported when the channel cannot carry the protocol.

    Behind a concentrator (a ConcentratorLink) the meter needs the ``port`` option (and ``pn`` for
    native reads); the concentrator's PW comes from ``secrets``."""
    if address is None:
        needed = "a unit id" if protocol == "modbus" else "an address"
        raise NotSupported(f"a {protocol} meter needs {needed}")
    if protocol == GROUP_PROTOCOL:
        if not isinstance(channel, ConcentratorLink) or not str(address).isdigit():
            raise NotSupported(
                f"a total group is a group number on a concentrator channel, not {channel.label}"
            )
        return ConcentratorGroupDriver(channel, int(address))
    if isinstance(channel, ConcentratorLink):
        return _behind_concentrator(protocol, channel, str(address), model, secrets, **options)
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


def _behind_concentrator(
    protocol: str, link: ConcentratorLink, address: str, model: str | None, secrets: Secrets, **options: Any
) -> ConcentratorMeterDriver:
    """A DL/T 645 meter on a concentrator's ``port`` (Pn ``pn``); sets the link's PW from ``secrets``."""
    port = options.pop("port", None)
    if protocol not in EDITIONS or port is None:
        raise NotSupported(f"a meter behind concentrator {link.key} needs a DL/T 645 protocol and port")
    source = _source(secrets)
    if isinstance(source, PwSource):
        link.set_pw(source.concentrator_pw(link.key))
    return ConcentratorMeterDriver(
        link,
        address,
        pn=options.pop("pn", None),
        port=int(port),
        edition=EDITIONS[protocol],
        model=model,
        credentials=_credentials(source, address),
        **options,
    )


@cache
def capabilities_for(protocol: str, model: str | None = None) -> Capabilities:
    """What a meter of ``protocol`` and ``model`` offers beyond reads (the engine plans jobs with it)."""
    if protocol == "modbus":
        return ModbusDriver.capabilities_of(load_modbus_model(model or DEFAULT_MODBUS_MODEL))
    if protocol in EDITIONS:
        return Dlt645Driver.capabilities_of(EDITIONS[protocol])
    if protocol == GROUP_PROTOCOL:
        return ConcentratorGroupDriver.capabilities
    raise NotSupported(f"no driver for protocol {protocol!r} yet (supported: {', '.join(EDITIONS)})")


__all__ = [
    "Capabilities",
    "ConcentratorGroupDriver",
    "ConcentratorMeterDriver",
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
