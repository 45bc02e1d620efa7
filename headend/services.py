"""The seam between the daemon and the services it runs (billing, fee control): what a service may use.

A service is a ``module:function`` named in ``[engine] services``; the engine calls it with a
:class:`ServiceHost` once its database pool is open and keeps the returned coroutine running until it
stops. A service reaches meters only through ``control`` (the meter's bus worker, at top priority).
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


def no_cluster(meter_id: int) -> tuple[str, int] | None:
    """Outside a cluster every meter is this daemon's, with nothing to fence."""
    return ("", 0)


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

    async def control(
        self, meter_id: int, body: JobBody[T], *, exchanges: int = 8, background: bool = False
    ) -> T:
        """Run ``body(driver)`` for the meter at control priority (``background``: after the reads)."""
        return await self.controller(meter_id, body, exchanges=exchanges, background=background)
