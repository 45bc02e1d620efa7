"""What the layers above need from a bus, as Protocols: the seam between transport and drivers.

``Bus`` is what every channel offers (the engine opens, closes and labels it), a Q/GDW 1376.1
:class:`~headend.transport.concentrator.ConcentratorLink` included. A driver then needs
one of two ways to talk on it: ``FrameBus`` carries raw request/reply frames (DL/T 645, Modbus RTU
framed by the driver) and is satisfied by :class:`~headend.transport.channel.Channel` and by a
concentrator's meter port (:class:`~headend.drivers.gdw1376.ForwardBus`, frames carried in AFN 10 F1);
``RegisterBus`` carries Modbus requests and is satisfied by
:class:`~headend.transport.modbus.ModbusChannel` and by :class:`~headend.transport.modbus.RtuLink`,
the adapter that puts Modbus RTU on a ``FrameBus``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from headend.transport.channel import Framer
from headend.transport.url import ChannelConfig


class LineStats(Protocol):
    """What every bus counts (a channel's ChannelStats, a concentrator link's LinkStats)."""

    frames_out: int
    frames_in: int
    timeouts: int
    retries: int
    rtt_count: int
    rtt_total_s: float


class Bus(Protocol):
    """A physical bus, one exchange at a time: opened lazily, closed by its owner."""

    @property
    def config(self) -> ChannelConfig: ...

    @property
    def stats(self) -> LineStats: ...

    @property
    def label(self) -> str: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class FrameBus(Bus, Protocol):
    """A bus carrying raw frames: send a request, collect the reply frame the caller accepts."""

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
        """``(frame, round_trip_s)``; raises ExchangeTimeout after the retries, ChannelUnavailable.

        ``once``: the request goes out at most once (no retry, never re-sent after a reconnection).
        ``secret``: the request carries a password; a dial-in bus sends it only on a connection
        whose meters were verified (else ChannelUnverified, nothing sent)."""
        ...

    async def send_only(self, request: bytes) -> None:
        """Send a frame that gets no reply (a broadcast)."""
        ...


IdentityCheck = Callable[[], Awaitable[bool | None]]


@runtime_checkable
class VerifiedBus(Bus, Protocol):
    """A bus whose device dials in: the meters behind each new connection are verified against the
    inventory before a password goes to it (``verify`` runs the check on the live connection)."""

    @property
    def verification_due(self) -> bool:
        """Whether the live connection has not been verified yet."""
        ...

    @property
    def verified(self) -> bool:
        """Whether the connection in use now was verified (readings from any other are suspect)."""
        ...

    def verify_again(self) -> None:
        """Have the next check run on the live connection now if it is not verified."""
        ...

    async def verify(self, check: IdentityCheck, undecided: str = "") -> bool | None:
        """Run ``check`` (True: the inventory's meters answered, False: other meters, None: cannot
        tell, for the reason ``undecided``) on the live connection and record the verdict on it: True
        marks it verified, False closes it as an impostor (unless an operator's grant covers it, see
        ``headend.transport.trust``: then None). A connection replaced during the check records
        nothing."""
        ...


class RegisterBus(Protocol):
    """A bus carrying Modbus requests (function, address, unit) and returning registers or bits."""

    @property
    def label(self) -> str: ...

    async def call(
        self, function: int, address: int, *, unit: int, count: int = 1, values: list[int] | None = None
    ) -> list[int]:
        """One request with the bus's retries; raises ModbusError on an exception reply."""
        ...
