"""The polling engine: channel workers, the interval scheduler, gap backfill, clocks and events.

Hooks for other services running in the daemon (e.g. fee control):

* ``await engine.control(meter_id, body)`` runs ``body(driver)`` on the meter's bus at top
  priority (ahead of every read) and returns its result or raises its error. ``body`` is an async
  callable taking the meter's driver, e.g. ``lambda d: d.switch("off", operator="ops1")``.
* ``await engine.read_now(meter_id, quantities)`` reads at on-demand priority and returns
  ``{quantity: value}`` (``store=True`` also stores them, quality ``actual``, source ``on_demand``).
* Services named in ``[engine] services`` (``"module:function"``) are called as
  ``function(engine)`` after start-up; a returned coroutine runs as a task until shutdown.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from headend.config import HeadendConfig, ReadPlan
from headend.engine.backfill import find_gaps, gap_readings
from headend.engine.clock import check_clock
from headend.engine.cycle import CycleRun, CycleStats
from headend.engine.events import store_events
from headend.engine.health import HealthBook
from headend.engine.heap import HeapKeeper
from headend.engine.jobs import Job, JobBody, Priority, Quarantined
from headend.engine.model import InventorySnapshot, MeterSpec, inventory_version, load_inventory
from headend.engine.ports import DriverPort, unsupported_errors, values_of
from headend.engine.timing import floor_boundary, next_boundary
from headend.engine.worker import ChannelWorker
from headend.metrics import EngineMetrics
from headend.store.reading import Reading
from headend.store.writer import ReadingWriter

log = logging.getLogger(__name__)

NEAR_CAPACITY = 0.9  # a cycle using this share of its interval is logged as a warning
MAINTENANCE_EVERY = 3600.0  # storage upkeep (partitions ahead, daily aggregate) on the native layout


class Engine:
    """Runs the daemon's work; ``start`` and ``stop`` bracket its life (see the module docstring)."""

    def __init__(
        self,
        config: HeadendConfig,
        dsn: str,
        writer: ReadingWriter,
        port: DriverPort,
        metrics: EngineMetrics | None = None,
    ) -> None:
        self.config = config
        self.dsn = dsn
        self.writer = writer
        self.port = port
        self.metrics = metrics or EngineMetrics()
        self.health = HealthBook(config.timeouts, config.health)
        self.interval = config.polling.interval
        self.workers: dict[int, ChannelWorker] = {}
        self.inventory = InventorySnapshot({}, {})
        self.pool: asyncpg.Pool | None = None
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self._version: tuple | None = None
        self._cycles: dict[int, tuple[CycleStats, list[Job], asyncio.Task[None]]] = {}
        self._unread: dict[int, list[int]] = {}  # channel -> meters an overrun cycle never reached
        self._backfilling: dict[int, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._services: list[asyncio.Task[Any]] = []
        self._meter_channel: dict[int, int] = {}
        self._clock_flags: dict[int, int] = {}
        # meters whose model or edition cannot do "clock" / "events" at all: not asked again
        self._unsupported: dict[str, set[int]] = {"clock": set(), "events": set()}
        self._stopping = False
        self._reload_lock = asyncio.Lock()
        self._gappy: set[int] = set()  # meters that may have gaps: all at start, then after failures
        self.heap = HeapKeeper()

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, load the inventory, start workers and the schedule, backfill what is missing."""
        self.pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4)
        await self.writer.start()
        await self.reload_inventory()
        polling = self.config.polling
        now = datetime.now(UTC)
        offset = timedelta(seconds=polling.offset)
        first = next_boundary(now - offset, self.interval) + offset  # the next boundary's read time
        half = timedelta(seconds=self.interval / 2)  # mid-interval: never near a boundary
        self._every("cycle", self.interval, first)
        self._every("inventory", polling.inventory_reload, now + timedelta(seconds=polling.inventory_reload))
        self._every("gauges", min(5.0, self.interval), now)
        self._every("maintenance", MAINTENANCE_EVERY, now + half)
        if self.config.backfill.enabled:
            self._every(
                "backfill",
                self.config.backfill.retry_every,
                now + timedelta(seconds=self.config.backfill.retry_every),
            )
        if self.config.clock.enabled:
            self._every("clock", self.config.clock.check_every, first + half)
        if self.config.events.enabled:
            self._every("events", self.config.events.collect_every, first + half)
        self.scheduler.start()
        if self.config.backfill.enabled:
            upto = floor_boundary(now - timedelta(seconds=polling.offset), self.interval)
            for worker in self.workers.values():
                self._start_backfill(worker, upto)
        for target in self.config.engine.services:
            self._start_service(target)
        log.info(
            "engine started",
            extra={
                "channels": len(self.workers),
                "interval_s": self.interval,
                "first_cycle": first.isoformat(),
            },
        )

    async def stop(self) -> None:
        """Stop scheduling, let each bus finish its exchange in flight, flush the writer."""
        self._stopping = True
        if self.scheduler.running:
            self.scheduler.pause()
            # let ticks that already fired (they return at once now) complete instead of being cancelled
            for _ in range(3):
                await asyncio.sleep(0)
            self.scheduler.shutdown(wait=False)
        for task in self._services:
            task.cancel()
        await asyncio.gather(*self._services, return_exceptions=True)
        await asyncio.gather(*(w.stop() for w in self.workers.values()))
        while self._tasks:  # cycles, backfills and checks end quickly once their jobs are refused
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.writer.close()
        if self.pool is not None:
            await self.pool.close()
        log.info("engine stopped", extra={"written": self.writer.written, "spooled": self.writer.spooled})

    def _every(self, what: str, seconds: float, first: datetime) -> None:
        """Schedule ``_tick(what)`` every ``seconds`` from ``first`` (late runs coalesce, never pile up)."""
        self.scheduler.add_job(
            self._tick,
            "interval",
            args=[what],
            seconds=seconds,
            next_run_time=first,
            id=what,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )

    async def _tick(self, what: str) -> None:
        """Scheduler entry point: start the work as an engine task (so shutdown can wait for it)."""
        if self._stopping:
            return
        offset = timedelta(seconds=self.config.polling.offset)
        if what == "cycle":
            self.run_cycle(floor_boundary(datetime.now(UTC) - offset, self.interval))
        elif what == "inventory":
            self._spawn(self.reload_inventory(), "inventory")
        elif what == "gauges":
            self._refresh_gauges()
        elif what == "backfill":  # one interval behind: the current cycle may still be reading
            upto = floor_boundary(datetime.now(UTC) - offset, self.interval) - timedelta(
                seconds=self.interval
            )
            for worker in list(self.workers.values()):
                self._start_backfill(worker, upto)
        elif what == "maintenance":
            self._spawn(self._maintenance(), "maintenance")
        else:
            self._spawn_all(what)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        if self._stopping and not name.startswith("retire-"):
            coro.close()
            raise RuntimeError("engine is stopping")
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("engine task failed", exc_info=task.exception(), extra={"task": task.get_name()})

    def _start_service(self, target: str) -> None:
        module_name, _, func_name = target.partition(":")
        func = getattr(importlib.import_module(module_name), func_name)
        result = func(self)
        if asyncio.iscoroutine(result):
            self._services.append(asyncio.create_task(result, name=f"service-{target}"))

    # -- inventory ----------------------------------------------------------------------------

    async def reload_inventory(self) -> None:
        """Re-read channels and meters if they changed; add, update and retire workers."""
        async with self._reload_lock:  # two overlapping reloads could give one bus two workers
            await self._reload_inventory()

    async def _reload_inventory(self) -> None:
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            version = await inventory_version(conn)
            if version == self._version:
                return
            snapshot = await load_inventory(conn)
        self._version = version
        for channel_id in set(self.workers) - set(snapshot.channels):
            worker = self.workers.pop(channel_id)
            self._spawn(worker.stop(), f"retire-{worker.spec.name}")
        for channel_id, spec in snapshot.channels.items():
            meters = snapshot.meters_by_channel.get(channel_id, [])
            worker = self.workers.get(channel_id)
            if worker is not None and worker.spec != spec:
                self.workers.pop(channel_id)
                await worker.stop()  # the same bus may be reopened below: never two owners at once
                worker = None
            if worker is None:
                worker = ChannelWorker(
                    spec, meters, self.port.open_channel, self.port.make_driver, self.health, self.metrics
                )
                worker.start()
                self.workers[channel_id] = worker
            else:
                worker.update_meters(meters)
        self.inventory = snapshot
        self.port.inventory_loaded(snapshot.channels.values())  # dial-in identities now expected
        meter_channel = {m.id: cid for cid, ms in snapshot.meters_by_channel.items() for m in ms}
        self._gappy |= set(meter_channel) - set(self._meter_channel)
        self._meter_channel = meter_channel
        log.info(
            "inventory loaded", extra={"channels": len(snapshot.channels), "meters": len(self._meter_channel)}
        )

    # -- hooks for other services -------------------------------------------------------------

    def _worker_of(self, meter_id: int) -> ChannelWorker:
        channel_id = self._meter_channel.get(meter_id)
        if channel_id is None or channel_id not in self.workers:
            raise LookupError(f"meter {meter_id} is not in the enabled inventory")
        return self.workers[channel_id]

    async def control(self, meter_id: int, body: JobBody, *, exchanges: int = 8) -> Any:
        """Run ``body(driver)`` for a meter at top priority (relay commands); returns its result."""
        job = Job(
            Priority.CONTROL,
            meter_id=meter_id,
            kind="control",
            body=body,
            exchanges=exchanges,
            skip_if_quarantined=False,
        )
        return await self._worker_of(meter_id).submit(job)

    async def read_now(
        self, meter_id: int, quantities: list[str], *, store: bool = False
    ) -> dict[str, float]:
        """Read quantities now at on-demand priority; optionally store them at the current interval."""
        job = Job(
            Priority.ON_DEMAND,
            meter_id=meter_id,
            kind="on_demand",
            body=lambda d: d.read(list(quantities)),
            exchanges=len(quantities),
            skip_if_quarantined=False,
        )
        values = values_of(await self._worker_of(meter_id).submit(job))
        if store:
            ts = floor_boundary(datetime.now(UTC), self.interval)
            await self._submit(
                [Reading(meter_id, q, ts, v, "actual", "on_demand") for q, v in values.items()]
            )
        return values

    # -- scheduled reads ----------------------------------------------------------------------

    def plan_for(self, meter: MeterSpec) -> ReadPlan:
        return self.config.plan_for(meter.model)

    def run_cycle(self, ts: datetime) -> None:
        """Queue every due meter's read plan for interval ``ts`` on every channel."""
        self.heap.settle(time.monotonic())
        for channel_id, worker in list(self.workers.items()):
            previous = self._cycles.get(channel_id)
            if previous is not None and not previous[2].done():
                self._overrun(worker, *previous)
            stats = CycleStats(channel_id, worker.spec.name, ts, self.interval, worker.busy_seconds)
            jobs = [self._read_job(m) for m in self._cycle_order(channel_id, worker)]
            run = CycleRun(stats, jobs, self._submit, self._gappy.add)
            for job in jobs:
                worker.submit(job)
            task = self._spawn(self._channel_cycle(worker, run), f"cycle-{worker.spec.name}")
            self._cycles[channel_id] = (stats, jobs, task)

    def _cycle_order(self, channel_id: int, worker: ChannelWorker) -> list[MeterSpec]:
        """The channel's meters, those an overrun cycle left unread first: on a bus that cannot read
        every meter in one interval, no meter is starved for good."""
        unread = [worker.meters[m] for m in self._unread.pop(channel_id, []) if m in worker.meters]
        first = {m.id for m in unread}
        return unread + [m for m in worker.meters.values() if m.id not in first]

    async def wait_cycles(self) -> None:
        """Wait until every channel's latest cycle has finished and been recorded (benchmarks, tests)."""
        await asyncio.gather(*(task for _stats, _jobs, task in self._cycles.values()), return_exceptions=True)

    def _read_job(self, meter: MeterSpec) -> Job:
        quantities = self.plan_for(meter).quantities
        return Job(
            Priority.SCHEDULED,
            meter_id=meter.id,
            kind="read",
            body=lambda d: d.read(list(quantities)),
            exchanges=len(quantities),
        )

    def _overrun(self, worker: ChannelWorker, stats: CycleStats, jobs: list[Job], _task: Any) -> None:
        """The previous cycle is still running at the next boundary: say so and drop its leftovers."""
        load = stats.projected_utilisation(worker.busy_seconds)
        left = sum(1 for j in jobs if not j.future.done())
        log.warning(
            f"bus {worker.spec.name} at {load:.0%} of capacity",
            extra={
                "channel": worker.spec.name,
                "utilisation": round(load, 3),
                "unread": left,
                "cycle_at": stats.cycle_at.isoformat(),
            },
        )
        self.metrics.capacity_warnings.labels(worker.spec.name).inc()
        self._unread[worker.spec.id] = [job.meter_id for job in jobs if not job.future.done()]
        for job in jobs:
            if not job.future.done():
                job.future.cancel()

    async def _channel_cycle(self, worker: ChannelWorker, run: CycleRun) -> None:
        await run.wait()
        stats = run.stats
        stats.finish(worker.busy_seconds)
        self.metrics.utilisation.labels(worker.spec.name).set(stats.utilisation)
        if stats.utilisation >= NEAR_CAPACITY:
            log.warning(
                f"bus {worker.spec.name} at {stats.utilisation:.0%} of capacity",
                extra={"channel": worker.spec.name, "utilisation": round(stats.utilisation, 3)},
            )
        if stats.success_rate is not None:
            self.metrics.success_rate.labels(worker.spec.name).set(stats.success_rate)
        self._update_overall_success(stats.cycle_at)
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            await stats.store(conn)
        self._start_backfill(worker, stats.cycle_at)

    async def _submit(self, readings: list[Reading]) -> None:
        if not readings:
            return
        await self.writer.submit(readings)
        for quality, count in Counter(r.quality for r in readings).items():
            self.metrics.readings.labels(quality).inc(count)

    def _update_overall_success(self, ts: datetime) -> None:
        due = succeeded = 0
        for stats, _jobs, _task in self._cycles.values():
            if stats.cycle_at == ts:
                due += stats.due
                succeeded += stats.succeeded
        if due:
            self.metrics.overall_success.set(succeeded / due)

    async def _maintenance(self) -> None:
        from headend.store.maintenance import run_maintenance

        assert self.pool is not None
        async with self.pool.acquire() as conn:
            await run_maintenance(conn, datetime.now(UTC))

    def _refresh_gauges(self) -> None:
        self.metrics.writer_lag.set(self.writer.lag)
        self.metrics.writer_pending.set(self.writer.pending)
        self.metrics.spool_bytes.set(self.writer.spool_bytes)
        self.metrics.quarantined.set(self.health.quarantined_count())
        self.port.refresh_dialin_gauges(self.metrics, [worker.spec for worker in self.workers.values()])

    # -- gaps and backfill --------------------------------------------------------------------

    def _start_backfill(self, worker: ChannelWorker, upto: datetime) -> None:
        """Backfill the channel's possibly gappy meters up to ``upto`` unless a pass is running."""
        if not self.config.backfill.enabled or self._stopping:
            return
        running = self._backfilling.get(worker.spec.id)
        if running is not None and not running.done():
            return
        # a meter that is failing now is left alone until a read succeeds again ("when it returns")
        meters = [
            m for m in worker.meters.values() if m.id in self._gappy and self.health.of(m.id).failures == 0
        ]
        if meters:
            task = self._spawn(self._backfill(worker, meters, upto), f"backfill-{worker.spec.name}")
            self._backfilling[worker.spec.id] = task

    async def _backfill(self, worker: ChannelWorker, meters: list[MeterSpec], upto: datetime) -> None:
        since = upto - timedelta(seconds=self.config.backfill.lookback)
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            gaps = await find_gaps(
                conn,
                meters,
                self.plan_for,
                since,
                upto,
                self.interval,
                self.config.backfill.max_intervals_per_meter,
            )
        for meter in meters:
            if not gaps.get(meter.id):
                self._gappy.discard(meter.id)
        await asyncio.gather(
            *(
                self._backfill_meter(worker, worker.meters[mid], stamps)
                for mid, stamps in gaps.items()
                if stamps and mid in worker.meters
            )
        )

    async def _backfill_meter(self, worker: ChannelWorker, meter: MeterSpec, stamps: list[datetime]) -> None:
        plan = self.plan_for(meter)
        if not self.port.has_memory(meter):
            readings = gap_readings(meter.id, plan, stamps, None)
        else:
            end = max(stamps) + timedelta(seconds=self.interval)
            job = Job(
                Priority.BACKFILL,
                meter_id=meter.id,
                kind="backfill",
                body=lambda d: d.read_profile(min(stamps), end),
                exchanges=4 + len(stamps),
            )
            try:
                records = await worker.submit(job)
            except unsupported_errors():  # this meter (model/edition) keeps no profile after all
                records = None
            except (Quarantined, Exception) as exc:
                log.info(
                    "backfill deferred", extra={"meter_id": meter.id, "gaps": len(stamps), "error": str(exc)}
                )
                return
            history = None if records is None else self.port.profile_records(records)
            readings = gap_readings(meter.id, plan, stamps, history)
        await self._submit(readings)
        self._gappy.discard(meter.id)
        log.info(
            "backfilled",
            extra={
                "meter_id": meter.id,
                "gaps": len(stamps),
                "readings": len(readings),
                "missing": sum(1 for r in readings if r.quality == "missing"),
            },
        )

    # -- clocks and events --------------------------------------------------------------------

    def _spawn_all(self, what: str) -> None:
        for worker in list(self.workers.values()):
            for meter in list(worker.meters.values()):
                if meter.id in self._unsupported[what]:
                    continue
                body = self._clock_job if what == "clock" else self._events_job
                self._spawn(body(worker, meter), f"{what}-{meter.id}")

    def _not_supported(self, what: str, meter: MeterSpec, exc: BaseException) -> None:
        """Remember that a meter cannot do ``what`` (its model or edition lacks it); say so once."""
        self._unsupported[what].add(meter.id)
        log.info(
            f"meter does not support {what}; not asked again", extra={"meter_id": meter.id, "error": str(exc)}
        )

    async def _clock_job(self, worker: ChannelWorker, meter: MeterSpec) -> None:
        max_drift = self.config.clock.max_drift
        job = Job(
            Priority.BACKFILL,
            meter_id=meter.id,
            kind="clock",
            body=lambda d: check_clock(d, max_drift),
            exchanges=4,
        )
        try:
            result = await worker.submit(job)
        except unsupported_errors() as exc:
            self._not_supported("clock", meter, exc)
            return
        except Exception as exc:
            log.info("clock check failed", extra={"meter_id": meter.id, "error": str(exc)})
            return
        streak = self._clock_flags[meter.id] = (
            self._clock_flags.get(meter.id, 0) + 1 if result.off_after else 0
        )
        if not result.corrected:
            return
        self.metrics.clock_corrections.inc()
        flagged = streak >= self.config.clock.flag_after
        kind = "clock_corrected" if not result.off_after else "clock_off" if flagged else "clock_still_off"
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO events (category, kind, meter_id, channel_id, occurred_at, details)"
                " VALUES ('comm', $1, $2, $3, $4, $5::jsonb)",
                kind,
                meter.id,
                meter.channel_id,
                result.checked_at,
                result.details_json(),
            )
        log.log(
            logging.WARNING if result.off_after else logging.INFO,
            kind,
            extra={"meter_id": meter.id, "drift_s": result.drift_before, "after_s": result.drift_after},
        )

    async def _events_job(self, worker: ChannelWorker, meter: MeterSpec) -> None:
        kinds = list(self.config.events.kinds)
        if not self.port.has_events(meter):
            return
        job = Job(
            Priority.BACKFILL,
            meter_id=meter.id,
            kind="events",
            body=lambda d: self.port.read_events(d, kinds),
            exchanges=2 * len(kinds),
        )
        try:
            records = await worker.submit(job)
        except unsupported_errors() as exc:
            self._not_supported("events", meter, exc)
            return
        except Exception as exc:
            log.info("event collection failed", extra={"meter_id": meter.id, "error": str(exc)})
            return
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            await store_events(conn, meter, records)
