"""Dial-in concentrators on the shared listener: a ``gdw1376://ADDRESS`` link fed by the hub.

A listener of kind ``gdw1376`` identifies a connection by its login frame (AFN 02 F1, identity =
A1+A2, see :class:`~headend.transport.identify.LoginIdentifier`) and the
:class:`~headend.transport.hub.DialinHub` binds it to the device ``("gdw1376", A1+A2)`` (unknown
terminals refused or held like unknown DTUs; a newer login of a connected terminal is a conflict,
see the hub).
:class:`DialinConcentratorLink` is the :class:`~headend.transport.concentrator.ConcentratorLink`
of such a channel: it takes each connection the hub binds to its terminal at once (push, so the
login is confirmed while the concentrator waits for it), and asks the hub for the live connection
when a request finds none (pull; ``wait_s`` 0 in the daemon: an absent concentrator fails fast
with :class:`~headend.transport.hub.ChannelOffline`). The link reads
the connection as a stream that starts with the login frame, so it confirms the login and every
later heartbeat itself; the connection stays owned by the listener (its caps, silence timeout and
counts apply). A request left unanswered (nothing received from the concentrator, not even a
heartbeat) marks the connection as not answering, so a newer login may replace it; the channel's
``allow`` networks are passed to the hub. No PW (AFN 04/05/10, hence no forwarded meter password
either) goes to a login before the engine verified it (the concentrator's archive against the
inventory, ``verify``): such a request raises :class:`~headend.transport.hub.ChannelUnverified`
with nothing sent. ``close`` closes the connection (the concentrator dials again); ``release`` leaves
it up, logged in and verified as it was, for the next link (a cluster member checks a login before it
claims the channel, then the channel's worker reads that same connection).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from time import monotonic

from headend.transport.concentrator import ConcentratorLink, ConcentratorTimeout, _Stream
from headend.transport.hub import ChannelUnverified, DialinHub
from headend.transport.listener import Inbound
from headend.transport.url import ChannelConfig
from protocols.gdw1376 import Frame, Unit

ARCHIVE_AFN, ARCHIVE_FN = 0x04, 10  # AFN 04 F10: the meter archive, all a trusted login may be sent


class _LinkStream(asyncio.StreamReaderProtocol):
    """The receiving end of a listener's connection, read by a concentrator link as a stream."""

    def moved(self) -> None:
        """Nothing to do: the link itself sends a request in flight again on the newer login."""


class _LinkWriter(asyncio.StreamWriter):
    """The writing end of a listener's connection: the link writes and closes through it, but the
    connection is the listener's, so a writer collected after its link released the connection leaves
    it up (``StreamWriter``'s finalizer would close it)."""

    def __del__(self) -> None:
        """Nothing: the listener, or the link's ``close``, ends the connection."""


def _streams(inbound: Inbound) -> tuple[_LinkStream, asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Attach a stream to ``inbound``; returns it (the receiver attached, its reader and writer) with
    the login frame the device identified with."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(loop=loop)
    protocol = _LinkStream(reader, loop=loop)
    inbound.attach(protocol)  # connection_made: the reader gets the transport
    assert inbound.transport is not None
    writer = _LinkWriter(inbound.transport, protocol, reader, loop)
    return protocol, reader, writer, inbound.identification


class DialinConcentratorLink(ConcentratorLink):
    """A ``gdw1376://`` link whose connections come from a dial-in hub (see the module docstring)."""

    def __init__(self, config: ChannelConfig, hub: DialinHub, wait_s: float = 0.0) -> None:
        super().__init__(config, wait_s=wait_s)
        if config.device is None:
            raise ValueError(f"{config.label} is not a dial-in channel")
        self.hub = hub
        self.device = config.device
        self._watching = True
        self._inbound: Inbound | None = None  # the connection the link reads now
        self._receiver: _LinkStream | None = None  # what the link attached to it
        hub.expect(self.device, config.allow)
        hub.watch(self.device, self._bound)

    async def request(
        self, afn: int, units: Sequence[Unit], *, extra_s: float = 0.0, retries: int | None = None
    ) -> list[Frame]:
        """As :meth:`ConcentratorLink.request`; a timeout with nothing received marks the connection."""
        inbound = self.hub.live.get(self.device)
        received = inbound.last_rx if inbound is not None else 0.0
        try:
            return await super().request(afn, units, extra_s=extra_s, retries=retries)
        except ConcentratorTimeout:
            if (
                inbound is not None
                and inbound.last_rx == received
                and inbound is self.hub.live.get(self.device)
            ):
                inbound.missed()
            raise

    async def open(self) -> None:
        """Take the terminal's connection if it is already up (its login is then confirmed at once)."""
        if not self.online and self.hub.online(self.device):
            self._bound(self.hub.live[self.device])

    def _bound(self, inbound: Inbound) -> None:
        if inbound.link is not None:
            return  # already this link's connection
        self._receiver, reader, writer, login = _streams(inbound)
        self._inbound = inbound
        self.attach(reader, writer, login)

    def _check_pw_allowed(self, afn: int, units: Sequence[Unit]) -> None:
        inbound = self._inbound
        if inbound is not None and inbound.verified:
            return
        archive = afn == ARCHIVE_AFN and all(u.fns == (ARCHIVE_FN,) for u in units)
        if inbound is not None and archive and self.hub.trusts.covers(self.device, inbound):
            return  # an operator trusted this login for its archive request (headend.transport.trust)
        self.hub.counts["secret_refused_unverified"] += 1
        raise ChannelUnverified(f"{self.label}: this login is not verified: no PW sent")

    @property
    def verified(self) -> bool:
        """Whether the login this link reads now was verified."""
        inbound = self._inbound
        return inbound is not None and not inbound.closed and inbound.verified

    def verify_again(self) -> None:
        """Have the next job check the live login again (its archive was rewritten, or the inventory
        changed)."""
        inbound = self._inbound
        if inbound is not None and not inbound.verified:
            inbound.checked_at = None

    @property
    def verification_due(self) -> bool:
        """Whether the terminal's live connection (or the next, if none is up) is not verified yet."""
        inbound = self.hub.live.get(self.device)
        return inbound is None or inbound.closed or inbound.verification_due(monotonic())

    async def verify(self, check: Callable[[], Awaitable[bool | None]], undecided: str = "") -> bool | None:
        """Run ``check`` on the live connection and record its verdict there (see ``VerifiedBus``); a
        login whose archive disagrees but that an operator's open grant covers is not closed: it is
        trusted for its archive request only (None)."""
        target = await self.hub.connection(self.device, self.wait_s)  # raises ChannelOffline
        verdict = await check()
        if self._inbound is not target or target.closed:
            return None
        if verdict:
            target.verified = True
        elif verdict is None:
            target.checked_at = monotonic()
            self.hub.identity_undecided(target, undecided or "nothing to compare the archive with")
        elif (grant := self.hub.trusts.claim(self.device, target)) is not None:
            target.checked_at = monotonic()
            said = f"trusted by operator {grant.granted_by} for its archive request only ({grant.reason})"
            self.hub.identity_undecided(target, said)
            return None
        else:
            self.hub.identity_refused(target, "the concentrator's archive is not the inventory's")
        return verdict

    async def _connection(self) -> _Stream:
        """The attached connection, else the hub's live one (waiting up to ``wait_s``; raises
        ChannelOffline). While waiting, the hub may already have pushed it through ``_bound``."""
        if not self.online:
            self._bound(await self.hub.connection(self.device, self.wait_s))
        return await super()._connection()

    async def close(self) -> None:
        """Close the connection (the concentrator dials again) and stop expecting the terminal."""
        self._stop_watching()
        await super().close()

    async def release(self) -> None:
        """Stop using the terminal's connection but leave it up, logged in (its listener confirms the
        heartbeats until a link takes it again), and stop expecting the terminal: a cluster member's
        identity check before it claims the channel, whose worker then reads the same connection."""
        self._stop_watching()
        inbound, receiver, stream = self._inbound, self._receiver, self._stream
        self._inbound = self._receiver = None
        if inbound is not None and receiver is not None:
            inbound.detach(receiver)  # its bytes go to the listener again
        await self._stop(leave_up=True)
        if stream is not None and stream.task is not None:  # it reads nothing more once this returns
            with contextlib.suppress(asyncio.CancelledError):
                await stream.task

    def _stop_watching(self) -> None:
        if self._watching:
            self._watching = False
            self.hub.unwatch(self.device, self._bound)
            self.hub.forget(self.device)
