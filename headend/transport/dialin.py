"""A dial-in channel: the bus behind a device that connects to us (``dtu://ID``), used like any other channel.

The channel does not connect anywhere: it asks the :class:`~headend.transport.hub.DialinHub` for
the live connection of its identity when an exchange needs one, and raises
:class:`~headend.transport.hub.ChannelOffline` at once if there is none (optionally after waiting
``wait_s``, for the field commands). An exchange whose connection is replaced by a newer one from
the same device is sent again on the new connection (``_Link.moved``). A request left without any
reply marks the connection as not answering (``Inbound.missed``): a newer connection from the
device may then replace it. Closing the channel leaves the
device's connection up (the next channel for that identity uses it).
"""

from __future__ import annotations

from collections.abc import Callable

from headend.transport.channel import Channel, ExchangeTimeout, Framer, _Link
from headend.transport.hub import DialinHub
from headend.transport.listener import Inbound
from headend.transport.url import ChannelConfig


class DialinChannel(Channel):
    """A channel bound to whatever live connection its identity has (see the module docstring)."""

    def __init__(self, config: ChannelConfig, hub: DialinHub, wait_s: float = 0.0) -> None:
        super().__init__(config, connect_timeout_s=wait_s + 1.0)
        self.hub = hub
        if config.device is None:
            raise ValueError(f"{config.label} is not a dial-in channel")
        self.device = config.device
        self.wait_s = wait_s
        self._inbound: Inbound | None = None
        self._expecting = True
        hub.expect(self.device, config.allow)

    @property
    def online(self) -> bool:
        """Whether the device has a live connection now."""
        return self.hub.online(self.device)

    async def open(self) -> None:
        """Nothing to open: each exchange takes the identity's live connection (or finds it offline)."""

    async def exchange(
        self,
        request: bytes,
        framer: Framer,
        accept: Callable[[bytes], bool],
        *,
        reply_size: int = 64,
        turnaround_s: float | None = None,
        retries: int | None = None,
    ) -> tuple[bytes, float]:
        """As :meth:`Channel.exchange`; a timeout with nothing received marks the connection."""
        inbound = self.hub.live.get(self.device)
        received = inbound.last_rx if inbound is not None else 0.0
        try:
            return await super().exchange(
                request, framer, accept, reply_size=reply_size, turnaround_s=turnaround_s, retries=retries
            )
        except ExchangeTimeout:
            used = self._inbound
            if used is not None and used is inbound and used.last_rx == received:
                used.missed()
            raise

    async def _connect(self) -> _Link:
        inbound = await self.hub.connection(self.device, self.wait_s)
        link = _Link(self.stats, self.label)
        inbound.attach(link)
        self._inbound = inbound
        return link

    def _drop(self) -> None:
        link, self._link = self._link, None
        inbound, self._inbound = self._inbound, None
        if link is not None:
            self._discard_stale(link)
            if inbound is not None:
                inbound.detach(link)

    async def close(self) -> None:
        """Stop using the device's connection (it stays up) and stop expecting the identity."""
        await super().close()
        if self._expecting:
            self._expecting = False
            self.hub.forget(self.device)
