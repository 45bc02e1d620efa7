"""Transport: one channel per bus (serial port, TCP serial server, dial-in device), one exchange at a time.

``open_channel(url)`` parses a channel URL (see :mod:`headend.transport.url`) and returns a
:class:`~headend.transport.channel.Channel` or a Modbus channel; what drivers need from either is
typed in :mod:`headend.transport.bus`. Protocols bring their own deframer to ``exchange``.

The names below load their module on first use (``headend.transport.url`` alone, for a command that
only checks a URL, does not load pymodbus or the dial-in hub).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from headend.transport.bus import Bus, FrameBus, RegisterBus
    from headend.transport.channel import (
        Channel,
        ChannelError,
        ChannelOffline,
        ChannelStats,
        ChannelUnavailable,
        ExchangeTimeout,
    )
    from headend.transport.concentrator import ConcentratorLink
    from headend.transport.concentrator_dialin import DialinConcentratorLink
    from headend.transport.dialin import DialinChannel
    from headend.transport.hub import ChannelUnverified, DialinHub
    from headend.transport.modbus import ModbusChannel, ModbusError
    from headend.transport.opening import open_channel
    from headend.transport.url import (
        CONCENTRATOR_SCHEMES,
        ChannelConfig,
        ChannelUrlError,
        check_protocol,
        parse_channel_url,
    )

_HOMES: dict[str, str] = {
    "Bus": "headend.transport.bus",
    "FrameBus": "headend.transport.bus",
    "RegisterBus": "headend.transport.bus",
    "Channel": "headend.transport.channel",
    "ChannelError": "headend.transport.channel",
    "ChannelStats": "headend.transport.channel",
    "ChannelUnavailable": "headend.transport.channel",
    "ExchangeTimeout": "headend.transport.channel",
    "ConcentratorLink": "headend.transport.concentrator",
    "DialinConcentratorLink": "headend.transport.concentrator_dialin",
    "DialinChannel": "headend.transport.dialin",
    "ChannelOffline": "headend.transport.channel",
    "ChannelUnverified": "headend.transport.hub",
    "DialinHub": "headend.transport.hub",
    "ModbusChannel": "headend.transport.modbus",
    "ModbusError": "headend.transport.modbus",
    "open_channel": "headend.transport.opening",
    "CONCENTRATOR_SCHEMES": "headend.transport.url",
    "ChannelConfig": "headend.transport.url",
    "ChannelUrlError": "headend.transport.url",
    "check_protocol": "headend.transport.url",
    "parse_channel_url": "headend.transport.url",
}


def __getattr__(name: str) -> object:
    """``name`` from the module that defines it, imported on first use."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


__all__ = [
    "CONCENTRATOR_SCHEMES",
    "Bus",
    "Channel",
    "ChannelConfig",
    "ChannelError",
    "ChannelOffline",
    "ChannelStats",
    "ChannelUnavailable",
    "ChannelUnverified",
    "ChannelUrlError",
    "ConcentratorLink",
    "DialinChannel",
    "DialinConcentratorLink",
    "DialinHub",
    "ExchangeTimeout",
    "FrameBus",
    "ModbusChannel",
    "ModbusError",
    "RegisterBus",
    "check_protocol",
    "open_channel",
    "parse_channel_url",
]
