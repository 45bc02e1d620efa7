"""Bookkeeping of one channel's read cycle: due, succeeded, readings, busy time -> ``read_cycles``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from headend.engine.jobs import Job, WorkerStopped
from headend.engine.ports import values_of
from headend.store.reading import Reading
from headend.store.records import CycleRecord
from headend.store.spool import SpoolFullError
from headend.store.writer import StorageError
from headend.vocabulary import ReadingQuality

log = logging.getLogger(__name__)


@dataclass(slots=True)
class CycleStats:
    """Counts for one channel and one interval; ``utilisation`` is bus busy time / interval length."""

    channel_id: int
    channel: str
    cycle_at: datetime
    interval: float
    busy_at_start: float
    due: int = 0
    succeeded: int = 0
    readings: int = 0
    done: int = 0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_mono: float = field(default_factory=time.monotonic)
    finished_at: datetime | None = None
    utilisation: float = 0.0
    interrupted: bool = False  # its channel's worker stopped (shutdown) before every job ran

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.due if self.due else None

    def projected_utilisation(self, busy_now: float) -> float:
        """Bus time the whole cycle needs / interval, extrapolated from the jobs done so far."""
        busy = busy_now - self.busy_at_start
        if self.done == 0:
            return max(busy, time.monotonic() - self.started_mono) / self.interval
        return busy / self.done * self.due / self.interval

    def finish(self, busy_now: float) -> None:
        self.finished_at = datetime.now(UTC)
        self.utilisation = (busy_now - self.busy_at_start) / self.interval

    def record(self) -> CycleRecord:
        """This cycle as its ``read_cycles`` record (stored, or spooled, by the writer)."""
        return CycleRecord(
            self.channel_id,
            self.cycle_at,
            self.due,
            self.succeeded,
            self.readings,
            self.started_at,
            self.finished_at,
            self.utilisation,
        )


class CycleRun:
    """Collects one channel cycle's job results as they finish and stores them in chunks.

    ``succeeded`` counts a meter only once its readings are durable (the writer acknowledged them).
    ``on_failure(meter_id)`` is told about every meter whose read failed or was dropped.
    """

    CHUNK = 1000  # readings per writer submission

    def __init__(
        self,
        stats: CycleStats,
        jobs: list[Job],
        submit: Callable[[list[Reading]], Awaitable[None]],
        on_failure: Callable[[int], None],
    ) -> None:
        self.stats = stats
        self.jobs = jobs
        self._submit = submit
        self._on_failure = on_failure
        self._buffer: list[Reading] = []
        self._buffer_meters = 0
        self._writes: list[asyncio.Task[None]] = []
        self._all_done = asyncio.Event()
        stats.due = len(jobs)
        for job in jobs:
            job.future.add_done_callback(partial(self._job_done, job))
        if not jobs:
            self._all_done.set()

    def _job_done(self, job: Job, future: asyncio.Future[Any]) -> None:
        meter_id = job.meter_id
        stats = self.stats
        stats.done += 1
        values = None
        stopped = not future.cancelled() and isinstance(future.exception(), WorkerStopped)
        if stopped:
            stats.interrupted = True  # dropped by a stopping worker: not the meter's failure
        elif not future.cancelled() and future.exception() is None:
            try:
                values = values_of(future.result())
            except TypeError as exc:
                log.warning("unusable read result", extra={"meter_id": meter_id, "error": str(exc)})
        if values is None:
            if not stopped:
                self._on_failure(meter_id)
        else:
            ts = stats.cycle_at
            quality: ReadingQuality = (
                "suspect" if job.unverified else "actual"
            )  # a dial-in connection nothing verified
            self._buffer += [Reading(meter_id, q, ts, v, quality, "poll") for q, v in values.items()]
            self._buffer_meters += 1
            if len(self._buffer) >= self.CHUNK:
                self._flush()
        if stats.done >= stats.due:
            self._flush()
            self._all_done.set()

    def _flush(self) -> None:
        if self._buffer_meters:
            readings, meters = self._buffer, self._buffer_meters
            self._buffer, self._buffer_meters = [], 0
            self._writes.append(asyncio.create_task(self._write(readings, meters)))

    async def _write(self, readings: list[Reading], meters: int) -> None:
        try:
            await self._submit(readings)
        except SpoolFullError:  # the writer said so once for the whole episode
            return
        except StorageError as exc:
            log.error(
                "readings not stored",
                extra={"channel": self.stats.channel, "readings": len(readings), "error": str(exc)},
            )
            return
        except Exception:
            log.exception(
                "readings not stored", extra={"channel": self.stats.channel, "readings": len(readings)}
            )
            return
        self.stats.succeeded += meters
        self.stats.readings += len(readings)

    async def wait(self) -> None:
        """Return once every job has finished and every reading is durable (or failed to store)."""
        await self._all_done.wait()
        await asyncio.gather(*self._writes)
