"""Backfill passes: fill a channel's gaps from the meters' load profiles (or mark them missing)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from headend.engine.backfill import find_gaps, gap_readings
from headend.engine.context import EngineContext
from headend.engine.jobs import Job, Priority, Quarantined
from headend.engine.model import MeterSpec
from headend.engine.ports import unsupported_errors
from headend.engine.worker import ChannelWorker

log = logging.getLogger("headend.engine.engine")


class Backfiller:
    """At most one pass per channel; ``gappy`` holds the meters that may have gaps (all at start,
    then those whose read failed)."""

    def __init__(self, ctx: EngineContext) -> None:
        self.ctx = ctx
        self.gappy: set[int] = set()
        self._running: dict[int, asyncio.Task[None]] = {}

    def start(self, worker: ChannelWorker, upto: datetime) -> None:
        """Backfill the channel's possibly gappy meters up to ``upto`` unless a pass is running."""
        ctx = self.ctx
        if not ctx.config.backfill.enabled or ctx.tasks.stopping:
            return
        running = self._running.get(worker.spec.id)
        if running is not None and not running.done():
            return
        # a meter that is failing now is left alone until a read succeeds again ("when it returns")
        meters = [
            m for m in worker.meters.values() if m.id in self.gappy and ctx.health.of(m.id).failures == 0
        ]
        if meters:
            task = ctx.tasks.spawn(self._backfill(worker, meters, upto), f"backfill-{worker.spec.name}")
            self._running[worker.spec.id] = task

    async def _backfill(self, worker: ChannelWorker, meters: list[MeterSpec], upto: datetime) -> None:
        config = self.ctx.config
        since = upto - timedelta(seconds=config.backfill.lookback)
        async with self.ctx.db.acquire() as conn:
            gaps = await find_gaps(
                conn,
                meters,
                lambda m: config.plan_for(m.model),
                since,
                upto,
                config.polling.interval,
                config.backfill.max_intervals_per_meter,
            )
        for meter in meters:
            if not gaps.get(meter.id):
                self.gappy.discard(meter.id)
        await asyncio.gather(
            *(
                self._backfill_meter(worker, worker.meters[mid], stamps)
                for mid, stamps in gaps.items()
                if stamps and mid in worker.meters
            )
        )

    async def _backfill_meter(self, worker: ChannelWorker, meter: MeterSpec, stamps: list[datetime]) -> None:
        ctx = self.ctx
        plan = ctx.config.plan_for(meter.model)
        if not ctx.port.has_memory(meter):
            readings = gap_readings(meter.id, plan, stamps, None)
        else:
            end = max(stamps) + timedelta(seconds=ctx.config.polling.interval)
            job = Job(
                Priority.BACKFILL,
                meter_id=meter.id,
                kind="backfill",
                body=lambda d: d.read_profile(min(stamps), end, plan.quantities),
                exchanges=4 + len(stamps),
            )
            try:
                records = await worker.submit(job)
            except unsupported_errors():  # this meter (model/edition) keeps no profile after all
                records = None
            except (Quarantined, Exception) as exc:
                log.info(
                    "backfill deferred",
                    extra={
                        "meter": meter.label,
                        "meter_id": meter.id,
                        "gaps": len(stamps),
                        "error": str(exc),
                    },
                )
                return
            history = None if records is None else ctx.port.profile_records(records)
            settled = datetime.now(UTC) - timedelta(seconds=ctx.config.clock.boundary_interval)
            readings = gap_readings(meter.id, plan, stamps, history, settled)
            if job.unverified:  # read through a dial-in connection nothing verified
                readings = [replace(r, quality="suspect") if r.value is not None else r for r in readings]
        await ctx.submit(readings)
        self.gappy.discard(meter.id)
        log.info(
            "backfilled",
            extra={
                "meter": meter.label,
                "meter_id": meter.id,
                "gaps": len(stamps),
                "readings": len(readings),
                "missing": sum(1 for r in readings if r.quality == "missing"),
            },
        )
