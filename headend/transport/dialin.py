"""A dial-in channel: the bus behind a device that connects to us (``dtu://ID``), used like any other channel.

The channel does not connect anywhere: it asks the :class:`~headend.transport.hub.DialinHub` for
the live connection of its identity when an exchange needs one, and raises
:class:`~headend.transport.hub.ChannelOffline` at once if there is none (optionally after waiting
``wait_s``, for the field commands). An exchange whose connection is replaced by a newer one from
the same device is sent again on the new connection (``_Link.moved``). A request left without any
reply marks the connection as not answering (``Inbound.missed``): a newer connection from the
device may then replace it.

No password goes to a connection before the meters behind it were verified: a ``secret`` exchange
is refused (:class:`~headend.transport.hub.ChannelUnverified`, nothing sent) while the connection
it would use is unverified, also when it moves to a newer connection mid-exchange. ``verify``
records the verdict of an identity check (the engine's, see ``VerifiedBus``) on the connection it
ran on. Closing the channel leaves the
device's connection up (the next channel for that identity uses it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from time import monotonic

from headend.transport.channel import Channel, ExchangeTimeout, Framer, _Link
from headend.transport.hub import ChannelUnverified, DialinHub
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
        self._secrets = 0  # password-bearing exchanges in progress: no unverified connection is taken
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
        once: bool = False,
        secret: bool = False,
    ) -> tuple[bytes, float]:
        """As :meth:`Channel.exchange`; a timeout with nothing received marks the connection, a
        ``secret`` request goes only to a verified one (``once``: never re-sent on a redial)."""
        inbound = self.hub.live.get(self.device)
        received = inbound.last_rx if inbound is not None else 0.0
        if secret:
            attached = self._inbound
            self._require_verified(attached if attached is not None and not attached.closed else inbound)
            self._secrets += 1
        try:
            return await super().exchange(
                request,
                framer,
                accept,
                reply_size=reply_size,
                turnaround_s=turnaround_s,
                retries=retries,
                once=once,
            )
        except ExchangeTimeout:
            used = self._inbound
            if used is not None and used is inbound and used.last_rx == received:
                used.missed()
            raise
        finally:
            if secret:
                self._secrets -= 1

    def _require_verified(self, inbound: Inbound | None) -> None:
        if inbound is not None and not inbound.verified:
            self.hub.counts["secret_refused_unverified"] += 1
            raise ChannelUnverified(
                f"{self.label}: the meters behind this connection are not verified: no password sent"
            )

    @property
    def verification_due(self) -> bool:
        """Whether the device's live connection (or the next, if none is up) is not verified yet."""
        inbound = self.hub.live.get(self.device)
        return inbound is None or inbound.closed or inbound.verification_due(monotonic())

    @property
    def verified(self) -> bool:
        """Whether the connection this channel uses now (else the device's live one) was verified."""
        inbound = self._inbound
        if inbound is None or inbound.closed:
            inbound = self.hub.live.get(self.device)
        return inbound is not None and not inbound.closed and inbound.verified

    def verify_again(self) -> None:
        """Have the next job check the live connection now if it is not verified (see ``VerifiedBus``)."""
        inbound = self.hub.live.get(self.device)
        if inbound is not None and not inbound.verified:
            inbound.checked_at = None

    async def verify(self, check: Callable[[], Awaitable[bool | None]], undecided: str = "") -> bool | None:
        """Run ``check`` on the live connection and record its verdict there (see ``VerifiedBus``)."""
        target = await self.hub.connection(self.device, self.wait_s)  # raises ChannelOffline
        verdict = await check()
        if self._inbound is not target or target.closed:
            return None  # the connection changed during the check: checked again on the next job
        if verdict:
            target.verified = True
        elif verdict is None:
            target.checked_at = monotonic()
            self.hub.identity_undecided(target, undecided or "nothing to compare the meters with")
        else:
            self.hub.identity_refused(target, "other meters answer behind this connection")
        return verdict

    async def _connect(self) -> _Link:
        inbound = await self.hub.connection(self.device, self.wait_s)
        if self._secrets:
            self._require_verified(inbound)
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
