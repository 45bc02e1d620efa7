"""Scheduled read cycles: each interval, every channel's meters get their read plan queued."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from headend.engine.context import EngineContext
from headend.engine.cycle import CycleRun, CycleStats
from headend.engine.heap import HeapKeeper
from headend.engine.inventory_sync import InventorySync
from headend.engine.jobs import Job, Priority
from headend.engine.model import MeterSpec
from headend.engine.worker import ChannelWorker
from headend.store.records import CommEventRecord

if TYPE_CHECKING:
    from headend.drivers.base import MeterDriver

log = logging.getLogger("headend.engine.engine")

NEAR_CAPACITY = 0.9  # a cycle using this share of its interval is logged as a warning


class Cycles:
    """Runs cycles; ``on_failure(meter)`` hears of failed reads, ``on_finished(worker, ts)`` of
    recorded cycles (backfill starts from there)."""

    def __init__(
        self,
        ctx: EngineContext,
        inventory: InventorySync,
        on_failure: Callable[[int], None],
        on_finished: Callable[[ChannelWorker, datetime], None],
    ) -> None:
        self.ctx = ctx
        self.inventory = inventory
        self.interval = ctx.config.polling.interval
        self.heap = HeapKeeper()
        self._on_failure = on_failure
        self._on_finished = on_finished
        self._cycles: dict[int, tuple[CycleStats, list[Job], asyncio.Task[None]]] = {}
        self._unread: dict[int, list[int]] = {}  # channel -> meters an overrun cycle never reached
        self.recorded = asyncio.Event()  # set each time a channel's cycle has been recorded

    def run(self, ts: datetime) -> None:
        """Queue every due meter's read plan for interval ``ts`` on every channel."""
        self.heap.settle(time.monotonic())
        for channel_id, worker in list(self.inventory.workers.items()):
            previous = self._cycles.get(channel_id)
            if previous is not None and not previous[2].done():
                self._overrun(worker, previous[0], previous[1])
            stats = CycleStats(channel_id, worker.spec.name, ts, self.interval, worker.busy_seconds)
            jobs = [self._read_job(m, ts) for m in self._cycle_order(channel_id, worker)]
            run = CycleRun(stats, jobs, self.ctx.submit, self._on_failure)
            for job in jobs:
                worker.submit(job)
            task = self.ctx.tasks.spawn(self._channel_cycle(worker, run), f"cycle-{worker.spec.name}")
            self._cycles[channel_id] = (stats, jobs, task)

    async def wait(self) -> None:
        """Wait until every channel's latest cycle has finished and been recorded."""
        await asyncio.gather(*(task for _stats, _jobs, task in self._cycles.values()), return_exceptions=True)

    def _cycle_order(self, channel_id: int, worker: ChannelWorker) -> list[MeterSpec]:
        """The channel's meters, those an overrun cycle left unread first: on a bus that cannot read
        every meter in one interval, no meter is starved for good."""
        unread = [worker.meters[m] for m in self._unread.pop(channel_id, []) if m in worker.meters]
        first = {m.id for m in unread}
        return unread + [m for m in worker.meters.values() if m.id not in first]

    def _read_job(self, meter: MeterSpec, ts: datetime) -> Job:
        quantities = self.ctx.config.plan_for(meter.model).quantities_at(ts, self.interval)

        async def read(driver: MeterDriver) -> dict[str, float]:
            values = await driver.read(list(quantities))
            if driver.went_back:
                self._went_back(meter, driver.went_back)
            return values

        return Job(Priority.SCHEDULED, meter_id=meter.id, kind="read", body=read, exchanges=len(quantities))

    def _went_back(self, meter: MeterSpec, registers: dict[str, tuple[float, float]]) -> None:
        """Registers the driver read below their last accepted value and did not return: kept as one
        ``register_went_back`` event (the ``register_backwards`` rule's input), never as readings."""
        channel = self.inventory.workers[meter.channel_id].spec.name
        details = {q: {"previous": previous, "value": value} for q, (previous, value) in registers.items()}
        at = datetime.now(UTC)
        self.ctx.store_comm_event(
            CommEventRecord("register_went_back", meter.id, meter.channel_id, at, json.dumps(details))
        )
        self.ctx.metrics.went_back.labels(channel).inc(len(registers))
        log.warning(
            f"meter {meter.label}: {', '.join(registers)} read below the last accepted value, not stored",
            extra={"meter": meter.label, "meter_id": meter.id, "channel": channel, "registers": details},
        )

    def _overrun(self, worker: ChannelWorker, stats: CycleStats, jobs: list[Job]) -> None:
        """The previous cycle is still running at the next boundary: say so and drop its leftovers.

        When every read is done and only storing is left, the database is the bottleneck, not the
        bus: no capacity warning (the writer has said the database is unavailable)."""
        left = sum(1 for j in jobs if not j.future.done())
        if left == 0:
            return
        load = stats.projected_utilisation(worker.busy_seconds)
        log.warning(
            f"bus {worker.spec.name} at {load:.0%} of capacity",
            extra={
                "channel": worker.spec.name,
                "utilisation": round(load, 3),
                "unread": left,
                "cycle_at": stats.cycle_at.isoformat(),
            },
        )
        self.ctx.metrics.capacity_warnings.labels(worker.spec.name).inc()
        self._unread[worker.spec.id] = [job.meter_id for job in jobs if not job.future.done()]
        for job in jobs:
            if not job.future.done():
                job.future.cancel()

    async def _channel_cycle(self, worker: ChannelWorker, run: CycleRun) -> None:
        await run.wait()
        stats = run.stats
        if stats.interrupted:  # a shutdown cut it short: what was read is stored, no cycle to count
            log.info(
                "read cycle cut short by the channel's stop: not recorded",
                extra={"channel": worker.spec.name, "cycle_at": stats.cycle_at.isoformat()},
            )
            self.recorded.set()
            return
        stats.finish(worker.busy_seconds)
        metrics = self.ctx.metrics
        metrics.utilisation.labels(worker.spec.name).set(stats.utilisation)
        if stats.utilisation >= NEAR_CAPACITY:
            log.warning(
                f"bus {worker.spec.name} at {stats.utilisation:.0%} of capacity",
                extra={"channel": worker.spec.name, "utilisation": round(stats.utilisation, 3)},
            )
        if stats.success_rate is not None:
            metrics.success_rate.labels(worker.spec.name).set(stats.success_rate)
        self._update_overall_success(stats.cycle_at)
        try:
            await self.ctx.writer.submit_record(stats.record())
        except Exception as exc:  # a full spool or a refused row: this cycle's statistics only
            log.error("read cycle not recorded", extra={"channel": worker.spec.name, "error": str(exc)})
        self._on_finished(worker, stats.cycle_at)
        self.recorded.set()

    def _update_overall_success(self, ts: datetime) -> None:
        """The overall success gauge: the cycle at ``ts`` once every channel has finished it (a
        channel still reading would count its unread meters as failures)."""
        due = succeeded = 0
        for stats, _jobs, _task in self._cycles.values():
            if stats.cycle_at == ts:
                if stats.finished_at is None:
                    return
                due += stats.due
                succeeded += stats.succeeded
        if due:
            self.ctx.metrics.overall_success.set(succeeded / due)
