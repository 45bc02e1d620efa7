"""Transport: one channel per physical bus (serial port or TCP serial server), one exchange at a time.

``open_channel(url)`` parses a channel URL (see :mod:`headend.transport.url`) and returns a
:class:`~headend.transport.channel.Channel`; protocols bring their own deframer to ``exchange``.
"""

from headend.transport.channel import (
    Channel,
    ChannelError,
    ChannelStats,
    ChannelUnavailable,
    ExchangeTimeout,
)
from headend.transport.url import ChannelConfig, ChannelUrlError, parse_channel_url


def open_channel(url: str) -> Channel:
    """A channel for ``url`` (not yet connected: it opens on first use or with ``await channel.open()``)."""
    config = parse_channel_url(url)
    if config.scheme not in ("serial", "tcp"):
        raise ChannelUrlError(f"{config.scheme} channels are not supported yet (serial and tcp are)")
    return Channel(config)


__all__ = [
    "Channel",
    "ChannelConfig",
    "ChannelError",
    "ChannelStats",
    "ChannelUnavailable",
    "ChannelUrlError",
    "ExchangeTimeout",
    "open_channel",
    "parse_channel_url",
]
