"""What every engine job shares: the configuration, the driver port, metrics, health, the writer's
sink for readings, the database pool and the engine's task set (so shutdown can wait for work)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from headend.config import HeadendConfig
from headend.engine.health import HealthBook
from headend.engine.ports import DriverPort
from headend.metrics import EngineMetrics
from headend.store.reading import Reading
from headend.store.records import CommEventRecord
from headend.store.writer import UNAVAILABLE, ReadingWriter

log = logging.getLogger("headend.engine.engine")


class EngineTasks:
    """The engine's background tasks; once ``stopping``, only retirements may start."""

    def __init__(self) -> None:
        self.stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a named engine task; its failure is logged, never lost."""
        if self.stopping and not name.startswith("retire-"):
            coro.close()
            raise RuntimeError("engine is stopping")
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        if isinstance(error, UNAVAILABLE):  # the outage is logged once where it is noticed; retried later
            log.debug("engine task deferred: database unavailable", extra={"task": task.get_name()})
            return
        log.error("engine task failed", exc_info=error, extra={"task": task.get_name()})

    async def drain(self) -> None:
        """Wait until every task (and any it started meanwhile) has ended."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


@dataclass(slots=True)
class EngineContext:
    """Shared by the engine's jobs; ``pool`` exists between ``Engine.start`` and ``Engine.stop``."""

    config: HeadendConfig
    port: DriverPort
    metrics: EngineMetrics
    health: HealthBook
    writer: ReadingWriter
    tasks: EngineTasks = field(default_factory=EngineTasks)
    pool: asyncpg.Pool | None = None
    write_fence: Callable[[int], Awaitable[None]] | None = None  # a cluster member's (headend.services)

    @property
    def db(self) -> asyncpg.Pool:
        """The connection pool (the engine is running)."""
        if self.pool is None:
            raise RuntimeError("the engine is not started")
        return self.pool

    def store_comm_event(self, record: CommEventRecord) -> None:
        """Store a worker's communication event in the background (an outage defers it, logged once)."""
        if not self.tasks.stopping:
            self.tasks.spawn(self.writer.submit_record(record), name=f"comm-event-{record.kind}")

    async def submit(self, readings: list[Reading]) -> None:
        """Hand readings to the writer and count them by quality."""
        if not readings:
            return
        await self.writer.submit(readings)
        for quality, count in Counter(r.quality for r in readings).items():
            self.metrics.readings.labels(quality).inc(count)
