"""What the daemon does for one meter request, as jobs on the meter's channel worker.

A ``read`` is one job at on-demand priority reading the quantities asked for (the meter's read plan
when none), through the driver's own read and its plausibility checks, stored by the engine's
writer as a scheduled read is (quality ``actual``, source ``on_demand``, at the moment it was read,
never an interval's own time: a scheduled reading of the interval is never displaced, nor is the
on-demand one dropped beside it). A ``recollect`` finds the range's closed
intervals holding no reading (as the backfill passes do), reads the meter's load profile / freezes
one day of them per job and stores what it finds (``backfilled`` / ``freeze``) or ``missing``
markers where the meter will never have it (:func:`headend.engine.backfill.gap_readings`); intervals
already marked ``missing`` stay so and are counted as still missing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import asyncpg

from headend.config import HeadendConfig
from headend.drivers.base import MeterDriver, MeterTimeout
from headend.drivers.base import ProfileRecord as DriverProfileRecord
from headend.engine.backfill import find_gaps, gap_readings
from headend.engine.jobs import Job, Priority
from headend.engine.model import MeterSpec
from headend.engine.ports import DriverPort, unsupported_errors, values_of
from headend.engine.timing import floor_boundary
from headend.engine.worker import ChannelWorker
from headend.services import JobBody
from headend.store.meter_requests import Result, marked_missing
from headend.store.reading import Reading
from headend.transport.channel import ExchangeTimeout
from headend.transport.concentrator import ConcentratorTimeout

DAY_S = 86400.0
MAX_INTERVALS = 10**6  # no cap on a re-collection's gaps: the database bounds its range


class WorkHost(Protocol):
    """What the work needs of the running engine."""

    @property
    def config(self) -> HeadendConfig: ...

    @property
    def pool(self) -> asyncpg.Pool: ...

    @property
    def port(self) -> DriverPort: ...

    async def store(self, readings: list[Reading]) -> None: ...


Turn = Callable[[], Awaitable[None]]
"""Awaited before each job: the bus's turn for requests (see :class:`headend.requests.duty.Turns`)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """A done request's one-line reason, result and (a re-collection's) intervals filled / missing."""

    reason: str
    result: Result
    counts: tuple[int, int] | None = None


class PartlyDone(Exception):
    """A re-collection cut short by a failed job: its reason, with what was stored before it."""

    def __init__(self, reason: str, counts: tuple[int, int]) -> None:
        super().__init__(reason)
        self.counts = counts


def failure_reason(exc: BaseException) -> str:
    """One line for a failed job: no answer says so (the line's or the job's time limit), else the
    error's own words."""
    said = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError | ExchangeTimeout | MeterTimeout | ConcentratorTimeout):
        return f"the meter did not answer in time ({'job time limit' if said == 'TimeoutError' else said})"
    return said


async def read_meter(
    host: WorkHost, worker: ChannelWorker, meter: MeterSpec, quantities: Sequence[str], turn: Turn
) -> Outcome:
    """Read ``quantities`` of ``meter`` now and store them."""
    names = list(quantities)
    job = Job(
        Priority.ON_DEMAND,
        meter_id=meter.id,
        kind="on_demand",
        body=lambda d: d.read(list(names)),
        exchanges=len(names),
    )
    await turn()
    values = values_of(await worker.submit(job))
    at = datetime.now(UTC)
    if floor_boundary(at, host.config.polling.interval) == at:  # an interval's own time is the cycle's
        at += timedelta(microseconds=1)
    await host.store([Reading(meter.id, q, at, v, "actual", "on_demand") for q, v in values.items()])
    absent = [q for q in names if q not in values]
    said = f"read {len(values)} value(s) of meter {meter.label}"
    if absent:
        said += f"; the meter gave no {', '.join(absent)}"
    result: Result = {"read_at": at.isoformat(), "values": values}
    return Outcome(said, result)


def _profile(first: datetime, end: datetime, quantities: list[str]) -> JobBody[list[DriverProfileRecord]]:
    """A job reading the meter's records from ``first`` to ``end``."""

    async def body(driver: MeterDriver) -> list[DriverProfileRecord]:
        return await driver.read_profile(first, end, quantities)

    return body


def _days(stamps: list[datetime], interval: float) -> list[list[datetime]]:
    """``stamps`` (sorted) in runs of at most one day's intervals: one profile job each."""
    size = max(1, int(DAY_S // interval))
    return [stamps[i : i + size] for i in range(0, len(stamps), size)]


async def recollect(
    host: WorkHost, worker: ChannelWorker, meter: MeterSpec, since: datetime, until: datetime, turn: Turn
) -> Outcome:
    """Fill the meter's intervals in ``[since, until)`` that hold no reading from its memory."""
    config = host.config
    interval = config.polling.interval
    plan = config.plan_for(meter.model)
    now = datetime.now(UTC)
    closed = floor_boundary(now - timedelta(seconds=config.polling.offset), interval) - timedelta(
        seconds=interval
    )  # the current interval's cycle may still be reading
    upto = min(until - timedelta(microseconds=1), closed)
    span: Result = {"from": since.isoformat(), "to": until.isoformat()}
    if upto < since:
        return Outcome("nothing to re-collect: no interval of the range has closed yet", span, (0, 0))
    async with host.pool.acquire() as conn:
        gaps = await find_gaps(conn, [meter], lambda _m: plan, since, upto, interval, MAX_INTERVALS)
        marked = await marked_missing(conn, meter.id, plan.gap_key, since, upto)
    stamps = sorted(gaps.get(meter.id, []))
    filled = 0
    if stamps and not host.port.has_memory(meter):
        await host.store(gap_readings(meter.id, plan, stamps, None))
    elif stamps:
        settled = now - timedelta(seconds=config.clock.boundary_interval)
        for chunk in _days(stamps, interval):
            end = chunk[-1] + timedelta(seconds=interval)
            job = Job(
                Priority.ON_DEMAND,
                meter_id=meter.id,
                kind="backfill",
                body=_profile(chunk[0], end, plan.quantities),
                exchanges=4 + len(chunk),
            )
            await turn()
            try:
                records = await worker.submit(job)
            except unsupported_errors():  # this meter keeps no profile after all: markers
                records = None
            except Exception as exc:
                raise PartlyDone(failure_reason(exc), (filled, marked + len(stamps) - filled)) from exc
            history = None if records is None else host.port.profile_records(records)
            readings = gap_readings(meter.id, plan, chunk, history, settled)
            await host.store(readings)
            filled += len({r.ts for r in readings if r.quality != "missing"})
    missing = marked + len(stamps) - filled
    result: Result = {**span, "intervals": len(stamps), "filled": filled, "missing": missing}
    if marked:
        result["marked_before"] = marked
    said = f"re-collected {filled} of {len(stamps)} interval(s) without a reading; {missing} still missing"
    return Outcome(said, result, (filled, missing))
