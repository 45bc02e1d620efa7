"""Work items of a channel worker, ordered by priority then arrival."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Generic, TypeVar

from headend.services import JobBody
from headend.vocabulary import JobKind

T = TypeVar("T")


class Priority(IntEnum):
    """Lower runs first: relay commands, on-demand reads, scheduled reads, backfill (and housekeeping)."""

    CONTROL = 0
    ON_DEMAND = 1
    SCHEDULED = 2
    BACKFILL = 3


_sequence = itertools.count()


@dataclass(order=True, slots=True)
class Job(Generic[T]):
    """One unit of bus work for one meter; ``future`` resolves with the body's result (a ``T``) or error.

    ``kind`` names the work for logs and metrics (``read``, ``backfill``, ``clock``, ``events``,
    ``control`` ...). ``exchanges`` estimates how many request/reply pairs the body needs; the worker
    multiplies it by the meter's adaptive timeout to bound the job; ``wait_s`` adds the seconds the
    body may spend waiting between exchanges (a relay's confirmation window). ``skip_if_quarantined``
    drops the job for a quarantined meter instead of trying it. ``unverified`` is set by the worker
    before the future resolves when the body ran on a dial-in connection nothing verified: what it
    read is stored as ``suspect``.
    """

    priority: Priority
    seq: int = field(init=False, default_factory=_sequence.__next__)
    meter_id: int = field(compare=False, default=0)
    kind: JobKind = field(compare=False, default="read")
    body: JobBody[T] | None = field(compare=False, default=None)
    exchanges: int = field(compare=False, default=1)
    wait_s: float = field(compare=False, default=0.0)
    skip_if_quarantined: bool = field(compare=False, default=True)
    future: asyncio.Future[T] = field(init=False, compare=False)
    unverified: bool = field(init=False, compare=False, default=False)  # ran on an unverified connection

    def __post_init__(self) -> None:
        self.future = asyncio.get_running_loop().create_future()


class Quarantined(RuntimeError):
    """The job was dropped because its meter is quarantined after consecutive failures."""


class WorkerStopped(RuntimeError):
    """The job was dropped because the daemon is shutting down."""
