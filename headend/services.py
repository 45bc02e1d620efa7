"""The seam between the daemon and the services it runs (billing, fee control): what a service may use.

A service is a ``module:function`` named in ``[engine] services``; the engine calls it with a
:class:`ServiceHost` once its database pool is open and keeps the returned coroutine running until it
stops. A service reaches meters only through ``control`` (the meter's bus worker, at top priority).

In a cluster (``[cluster] enabled``) every daemon runs the services: a service that must run once
(billing, VEE, fee-control automation) works only while ``elected()`` names a lease, and names it on
its connection (``headend.store.cluster.set_service_fence``) so that the database refuses its writes
once the election has moved; the execution of a meter's commands and writes stays with the owner of
the meter's channel (``lease_of``), and a clock or parameter write awaits ``write_fence(meter)`` right
before its frame.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import asyncpg

from headend.drivers.base import MeterDriver

if TYPE_CHECKING:
    from headend.config import HeadendConfig
    from headend.metrics import EngineMetrics


T = TypeVar("T")

JobBody = Callable[[MeterDriver], Awaitable[T]]
"""A job's body: given the meter's driver, do the exchanges and return a result (of type ``T``)."""


LeaseOf = Callable[[int], "tuple[str, int] | None"]
"""The channel lease (member, epoch) a daemon acts under for a meter: None when another daemon holds
the meter's channel, ``("", 0)`` outside a cluster (nothing to fence)."""


Elected = Callable[[], "tuple[str, int] | None"]
"""The services' lease (member, epoch) while this daemon is the elected one of a cluster; None while
another daemon is; ``("", 0)`` outside a cluster (always elected, nothing to fence)."""


class LeaseMoved(Exception):
    """A write to a meter refused: this daemon does not hold the current lease of its channel (the
    database said so, or the daemon holds no lease for it). Not the meter's failure."""


WriteFence = Callable[[int], Awaitable[None]]
"""Awaited right before a clock or parameter write frame for a meter: raises :class:`LeaseMoved`
unless this daemon holds the channel's current lease (checked by the database). Nothing to check
outside a cluster."""


Reachable = Callable[[int], bool]
"""Whether a meter's channel can take a job now: False only for a dial-in channel whose device has no
live connection here (a job would fail at once, nothing sent)."""


def always_reachable(meter_id: int) -> bool:
    """Without dial-in channels every meter's channel is reached on demand."""
    return True


def no_cluster(meter_id: int) -> tuple[str, int] | None:
    """Outside a cluster every meter is this daemon's, with nothing to fence."""
    return ("", 0)


def always_elected() -> tuple[str, int] | None:
    """Outside a cluster this daemon runs every service, with nothing to fence."""
    return ("", 0)


async def no_fence(meter_id: int) -> None:
    """Outside a cluster no write is fenced."""


class ServiceHost(Protocol):
    """What the engine offers a service."""

    @property
    def config(self) -> HeadendConfig: ...

    @property
    def pool(self) -> asyncpg.Pool: ...

    @property
    def metrics(self) -> EngineMetrics: ...

    @property
    def lease_of(self) -> LeaseOf: ...

    @property
    def elected(self) -> Elected: ...

    @property
    def write_fence(self) -> WriteFence: ...

    @property
    def reachable(self) -> Reachable: ...

    async def control(
        self, meter_id: int, body: JobBody[T], *, exchanges: int = 8, background: bool = False
    ) -> T:
        """Run ``body(driver)`` for the meter at control priority (``exchanges`` frames at most); its
        result or its error. ``background``: after the bus's scheduled reads instead (parameter
        campaigns: the regular reads stay on time)."""
        ...


class Controller(Protocol):
    """The engine's ``control``: a job on the meter's bus worker at control priority."""

    def __call__(
        self, meter_id: int, body: JobBody[T], *, exchanges: int = 8, background: bool = False
    ) -> Awaitable[T]: ...


Service = Callable[[ServiceHost], Coroutine[Any, Any, None]]
"""A service's entry point: runs until cancelled when the daemon stops."""


@dataclass(frozen=True, slots=True)
class EngineServices:
    """The running engine as its services see it (the pool is open for as long as they run)."""

    config: HeadendConfig
    pool: asyncpg.Pool
    metrics: EngineMetrics
    controller: Controller
    lease_of: LeaseOf = no_cluster
    elected: Elected = always_elected
    write_fence: WriteFence = no_fence
    reachable: Reachable = always_reachable

    async def control(
        self, meter_id: int, body: JobBody[T], *, exchanges: int = 8, background: bool = False
    ) -> T:
        """Run ``body(driver)`` for the meter at control priority (``background``: after the reads)."""
        return await self.controller(meter_id, body, exchanges=exchanges, background=background)
