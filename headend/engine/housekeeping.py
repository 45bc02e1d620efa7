"""Housekeeping jobs: meter clocks (the configured policy), meter event records, storage upkeep and
the engine's gauges."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Literal

from headend.engine.clock import ClockPolicy, check_clock
from headend.engine.context import EngineContext
from headend.engine.events import events_record
from headend.engine.inventory_sync import InventorySync
from headend.engine.jobs import Job, Priority
from headend.engine.model import MeterSpec
from headend.engine.ports import unsupported_errors
from headend.engine.worker import ChannelWorker
from headend.store.maintenance import run_maintenance
from headend.store.records import CommEventRecord

log = logging.getLogger("headend.engine.engine")

MeterCheck = Literal["clock", "events"]


class Housekeeping:
    """Clock checks and event collection per meter at backfill priority; upkeep and gauges."""

    def __init__(self, ctx: EngineContext, inventory: InventorySync) -> None:
        self.ctx = ctx
        self.inventory = inventory
        self.policy = ClockPolicy.from_config(ctx.config.clock)
        self._clock_flags: dict[int, int] = {}  # meter -> consecutive corrections that did not hold
        # meters whose model or edition cannot do "clock" / "events" at all: not asked again
        self._unsupported: dict[MeterCheck, set[int]] = {"clock": set(), "events": set()}

    def check_all(self, what: MeterCheck) -> None:
        """Start a clock check or an event collection for every meter that can do it."""
        body = self._clock_job if what == "clock" else self._events_job
        for worker in list(self.inventory.workers.values()):
            for meter in list(worker.meters.values()):
                if meter.id not in self._unsupported[what]:
                    self.ctx.tasks.spawn(body(worker, meter), f"{what}-{meter.id}")

    def refresh_gauges(self) -> None:
        ctx = self.ctx
        ctx.metrics.writer_lag.set(ctx.writer.lag)
        ctx.metrics.writer_pending.set(ctx.writer.pending)
        ctx.metrics.spool_bytes.set(ctx.writer.spool_bytes)
        ctx.metrics.spool_full.set(int(ctx.writer.spool_full))
        ctx.metrics.spool_held.set(ctx.writer.held)
        ctx.metrics.spool_quarantined.set(ctx.writer.spool_quarantined)
        ctx.metrics.quarantined.set(ctx.health.quarantined_count())
        ctx.port.refresh_dialin_gauges(ctx.metrics, [w.spec for w in self.inventory.workers.values()])

    async def maintenance(self) -> None:
        """Storage upkeep (partitions ahead, daily aggregate)."""
        async with self.ctx.db.acquire() as conn:
            await run_maintenance(conn, datetime.now(UTC))

    def _not_supported(self, what: MeterCheck, meter: MeterSpec, exc: BaseException) -> None:
        """Remember that a meter cannot do ``what`` (its model or edition lacks it); say so once."""
        self._unsupported[what].add(meter.id)
        log.info(
            f"meter does not support {what}; not asked again",
            extra={"meter": meter.label, "meter_id": meter.id, "error": str(exc)},
        )

    async def _clock_job(self, worker: ChannelWorker, meter: MeterSpec) -> None:
        if not self.ctx.port.has_clock(meter):
            return
        policy = self.policy
        fence = self.ctx.write_fence
        guard = None if fence is None else (lambda: fence(meter.id))
        job = Job(
            Priority.BACKFILL,
            meter_id=meter.id,
            kind="clock",
            body=lambda d: check_clock(d, policy, guard),
            exchanges=5,  # date + time, the write (two) or broadcast, date + time read back
        )
        try:
            result = await worker.submit(job)
        except unsupported_errors() as exc:
            self._not_supported("clock", meter, exc)
            return
        except Exception as exc:
            log.info(
                "clock check failed", extra={"meter": meter.label, "meter_id": meter.id, "error": str(exc)}
            )
            return
        if result.action == "skipped":
            log.info(
                "clock correction deferred",
                extra={"meter": meter.label, "meter_id": meter.id, "reason": result.reason},
            )
        if not result.corrected:
            return
        streak = self._clock_flags[meter.id] = (
            self._clock_flags.get(meter.id, 0) + 1 if result.off_after else 0
        )
        self.ctx.metrics.clock_corrections.inc()
        flagged = streak >= self.ctx.config.clock.flag_after
        kind = "clock_corrected" if not result.off_after else "clock_off" if flagged else "clock_still_off"
        await self.ctx.writer.submit_record(
            CommEventRecord(kind, meter.id, meter.channel_id, result.checked_at, result.details_json())
        )
        log.log(
            logging.WARNING if result.off_after else logging.INFO,
            kind,
            extra={
                "meter": meter.label,
                "meter_id": meter.id,
                "drift_s": result.drift_before,
                "after_s": result.drift_after,
            },
        )

    async def _events_job(self, worker: ChannelWorker, meter: MeterSpec) -> None:
        port = self.ctx.port
        kinds = list(self.ctx.config.events.kinds)
        if not port.has_events(meter):
            return
        job = Job(
            Priority.BACKFILL,
            meter_id=meter.id,
            kind="events",
            body=lambda d: port.read_events(d, kinds),
            exchanges=2 * len(kinds),
        )
        try:
            records = await worker.submit(job)
        except unsupported_errors() as exc:
            self._not_supported("events", meter, exc)
            return
        except Exception as exc:
            log.info(
                "event collection failed",
                extra={"meter": meter.label, "meter_id": meter.id, "error": str(exc)},
            )
            return
        await self.ctx.writer.submit_record(events_record(meter, records))
