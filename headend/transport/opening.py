"""Opening a channel: the transport class a channel URL's scheme names."""

from __future__ import annotations

from headend.transport.channel import Channel
from headend.transport.concentrator import ConcentratorLink
from headend.transport.concentrator_dialin import DialinConcentratorLink
from headend.transport.dialin import DialinChannel
from headend.transport.hub import DialinHub
from headend.transport.modbus import ModbusChannel
from headend.transport.url import CONCENTRATOR_SCHEMES, ChannelUrlError, parse_channel_url


def open_channel(
    url: str, hub: DialinHub | None = None, wait_s: float = 0.0
) -> Channel | ModbusChannel | ConcentratorLink:
    """A channel for ``url`` (not yet connected: it opens on first use or with ``await channel.open()``).

    ``serial://`` and ``tcp://`` carry raw frames (DL/T 645); ``modbus-tcp://`` and ``rtu-over-tcp://``
    are Modbus gateways served by pymodbus; ``dtu://ID`` is the bus behind a device dialling in to
    one of ``hub``'s listeners (``wait_s``: how long an exchange waits for the device to connect);
    ``gdw1376+tcp://`` and ``gdw1376://`` are links to Q/GDW 1376.1 concentrators (a dial-in one
    gets its connections from ``hub``, whose ``gdw1376`` listeners identify it by its login).
    """
    config = parse_channel_url(url)
    if config.scheme == "gdw1376":
        if hub is None:
            raise ChannelUrlError(
                f"{url}: gdw1376:// channels need a listener ([listen] kind gdw1376, or --listen)"
            )
        return DialinConcentratorLink(config, hub, wait_s)
    if config.scheme in CONCENTRATOR_SCHEMES:
        return ConcentratorLink(config, wait_s=wait_s)
    if config.scheme in ("modbus-tcp", "rtu-over-tcp"):
        return ModbusChannel(config)
    if config.scheme == "dtu":
        if hub is None:
            raise ChannelUrlError(
                f"{url}: dtu:// channels need a listener ([listen] in the config, or --listen)"
            )
        return DialinChannel(config, hub, wait_s)
    return Channel(config)
