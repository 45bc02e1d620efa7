"""The engine's timers: named periodic callbacks on one scheduler (late runs coalesce, never pile up)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler


class Timers:
    """``every(name, seconds, first, callback)``; ``stop`` lets ticks that already fired finish."""

    def __init__(self) -> None:
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self._stopping = False

    def every(self, name: str, seconds: float, first: datetime, callback: Callable[[], object]) -> None:
        """Call ``callback`` every ``seconds`` from ``first`` until ``stop``."""

        async def tick() -> None:
            if not self._stopping:
                callback()

        self.scheduler.add_job(
            tick,
            "interval",
            seconds=seconds,
            next_run_time=first,
            id=name,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )

    def start(self) -> None:
        self.scheduler.start()

    async def stop(self) -> None:
        """Stop firing; ticks that already fired return at once and complete instead of being cancelled."""
        self._stopping = True
        if self.scheduler.running:
            self.scheduler.pause()
            for _ in range(3):
                await asyncio.sleep(0)
            self.scheduler.shutdown(wait=False)
