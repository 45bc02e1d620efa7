"""The daemon's concentrator duties beside reading meters: events, archive checks and clocks.

Built into the engine (not an ``[engine] services`` entry: it needs the bus workers, which a
configurable service is not given) and started on every run; it does nothing while no channel is a
concentrator. Every
``events_every`` seconds it stores the event records the concentrator links have read after an
ACD (AFN 0E F1: ERC 14 power off/on …) as ``terminal`` events of the channel, once each. Every
``archive_every`` seconds (first soon after start) it compares each concentrator's meter archive
(AFN 0A F10) with the inventory and reports one that disagrees (a warning naming what differs and
``headend_concentrator_archive_mismatch{channel} = 1``; ``headend concentrator archive push``
fixes it). With ``[clock] enabled`` it checks each concentrator's clock (AFN 0C F2) every
``[clock] check_every`` and sets it (AFN 05 F31) under the meters' clock policy
(:mod:`headend.engine.clock`, the one owner of it). The archive and clock
work runs as backfill-priority jobs on the concentrator's worker: never beside another request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import asyncpg

from headend.config import HeadendConfig
from headend.drivers.base import MeterDriver
from headend.drivers.gdw1376 import ConcentratorMeterDriver
from headend.drivers.gdw1376_terminal import ArchiveDiff, ArchivePoint, TerminalClock, diff_archive
from headend.engine.clock import ClockPolicy, ClockResult, check_clock
from headend.engine.jobs import Job, Priority
from headend.engine.worker import ChannelWorker
from headend.metrics import EngineMetrics
from headend.store.concentrators import TerminalEventRow, insert_terminal_events
from headend.store.events import close_meter_event, insert_meter_events
from headend.transport.concentrator import ConcentratorLink, TerminalEvent
from headend.transport.url import CONCENTRATOR_SCHEMES
from headend.vocabulary import JobKind

T = TypeVar("T")

log = logging.getLogger(__name__)

EVENTS_EVERY_S = 1.0
ARCHIVE_EVERY_S = 3600.0
FIRST_CHECK_AFTER_S = 5.0
EDITIONS = {"dlt645-2007": 2007, "dlt645-1997": 1997}


class ConcentratorHost(Protocol):
    """What the duties need from the running engine (:class:`headend.engine.engine.Engine`)."""

    @property
    def config(self) -> HeadendConfig: ...

    @property
    def pool(self) -> asyncpg.Pool: ...

    @property
    def metrics(self) -> EngineMetrics: ...

    @property
    def workers(self) -> dict[int, ChannelWorker]: ...


def is_concentrator(worker: ChannelWorker) -> bool:
    return worker.spec.url.split("://", 1)[0] in CONCENTRATOR_SCHEMES


def archive_points(worker: ChannelWorker) -> list[ArchivePoint]:
    """The worker's meters as the concentrator's archive should list them."""
    return [
        ArchivePoint(m.pn, m.port, m.address, EDITIONS.get(m.protocol, 2007))
        for m in worker.meters.values()
        if m.pn is not None and m.port is not None
    ]


async def store_meter_alarm(
    conn: asyncpg.Connection, meter_id: int, channel_id: int, event: TerminalEvent
) -> int:
    """A meter alarm of the concentrator as the meter's own event: a start stored once, an end
    closing the meter's open event of that kind; returns events stored."""
    alarm, at = event.alarm, event.occurred_at
    if alarm is None or at is None:
        return 0
    if not alarm.started:
        await close_meter_event(conn, meter_id, alarm.kind, at)
        return 0
    details = json.dumps({"erc": event.erc, "pn": alarm.pn, "raw": event.raw.hex().upper()})
    return await insert_meter_events(conn, meter_id, [(alarm.kind, meter_id, channel_id, at, None, details)])


async def on_link(
    worker: ChannelWorker,
    kind: JobKind,
    body: Callable[[ConcentratorLink], Awaitable[T]],
    exchanges: int = 8,
) -> T:
    """Run ``body(link)`` as one backfill-priority job on the concentrator's worker (after the job in
    flight; a dial-in connection is verified first, see ``ChannelWorker``)."""

    async def on_driver(driver: MeterDriver) -> T:
        if not isinstance(driver, ConcentratorMeterDriver):
            raise TypeError(f"{worker.spec.name}: not a meter behind a concentrator")
        return await body(driver.link)

    first = min(worker.meters)
    job = Job(
        Priority.BACKFILL,
        meter_id=first,
        kind=kind,
        body=on_driver,
        exchanges=exchanges,
        skip_if_quarantined=False,
    )
    result: T = await worker.submit(job)
    return result


def event_row(event: TerminalEvent) -> TerminalEventRow:
    details: dict[str, object] = {"erc": event.erc}
    if event.raw:
        details["raw"] = event.raw.hex().upper()
    return TerminalEventRow(event.kind, event.occurred_at or datetime.now(UTC), event.ended_at, details)


class ConcentratorDuties:
    """The service's state: when each concentrator was last checked, which disagree."""

    def __init__(
        self,
        engine: ConcentratorHost,
        *,
        events_every: float = EVENTS_EVERY_S,
        archive_every: float = ARCHIVE_EVERY_S,
        first_check_after: float = FIRST_CHECK_AFTER_S,
    ) -> None:
        self.engine = engine
        self.events_every = events_every
        self.archive_every = archive_every
        started = time.monotonic()
        self._due: dict[tuple[str, int], float] = {}
        self._first = started + first_check_after
        self.mismatched: dict[int, ArchiveDiff] = {}
        self._running: set[asyncio.Task[Any]] = set()

    async def run(self) -> None:
        try:
            while True:
                await self.pass_once()
                await asyncio.sleep(self.events_every)
        finally:
            for task in self._running:
                task.cancel()

    async def pass_once(self) -> None:
        """Store the events read so far; start the archive and clock checks that are due."""
        clock = self.engine.config.clock
        for channel_id, worker in list(self.engine.workers.items()):
            if not is_concentrator(worker) or not worker.meters:
                continue
            if isinstance(worker.channel, ConcentratorLink):
                await self._store_events(channel_id, worker, worker.channel)
            if self._is_due(("archive", channel_id), self.archive_every):
                self._start(self.check_archive(worker))
            if clock.enabled and self._is_due(("clock", channel_id), clock.check_every):
                self._start(self.check_clock(worker))

    def _is_due(self, key: tuple[str, int], every: float) -> bool:
        """Whether the check ``key`` is due now (then it is next due ``every`` seconds later)."""
        now = time.monotonic()
        if now < self._due.get(key, self._first):
            return False
        self._due[key] = now + every
        return True

    def _start(self, work: Coroutine[Any, Any, object]) -> None:
        task = asyncio.create_task(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _store_events(self, channel_id: int, worker: ChannelWorker, link: ConcentratorLink) -> None:
        events = link.take_events()
        if not events:
            return
        by_pn = {m.pn: m.id for m in worker.meters.values() if m.pn is not None}
        own = [e for e in events if e.alarm is None or e.alarm.pn not in by_pn]
        async with self.engine.pool.acquire() as conn:
            stored = await insert_terminal_events(conn, channel_id, [event_row(e) for e in own])
            for event in events:
                if event.alarm is not None and event.alarm.pn in by_pn:
                    stored += await store_meter_alarm(conn, by_pn[event.alarm.pn], channel_id, event)
        self.engine.metrics.concentrator_events.labels(worker.spec.name).inc(stored)
        log.info(
            "concentrator events stored",
            extra={"channel": worker.spec.name, "read": len(events), "stored": stored},
        )

    async def check_archive(self, worker: ChannelWorker) -> ArchiveDiff | None:
        """Compare the concentrator's archive with the inventory; log and flag a disagreement."""
        points = archive_points(worker)
        name = worker.spec.name
        try:
            diff = await on_link(worker, "archive", lambda link: diff_archive(link, points))
        except Exception as exc:
            log.info("concentrator archive not checked", extra={"channel": name, "error": str(exc)})
            return None
        gauge = self.engine.metrics.concentrator_archive_mismatch.labels(name)
        if diff.agrees:
            self.mismatched.pop(worker.spec.id, None)
            gauge.set(0)
            return diff
        self.mismatched[worker.spec.id] = diff
        gauge.set(1)
        log.warning(
            f"concentrator {name} archive disagrees with the inventory",
            extra={
                "channel": name,
                "missing_pn": [r.pn for r in diff.missing],
                "different_pn": [w.pn for w, _f in diff.different],
                "extra_pn": [r.pn for r in diff.extra],
            },
        )
        return diff

    async def check_clock(self, worker: ChannelWorker) -> ClockResult | None:
        """Read the concentrator's clock and set it under the clock policy."""
        policy = ClockPolicy.from_config(self.engine.config.clock)

        async def clock_of(link: ConcentratorLink) -> ClockResult:
            return await check_clock(TerminalClock(link), policy)

        try:
            result = await on_link(worker, "clock", clock_of)
        except Exception as exc:
            log.info("concentrator clock not checked", extra={"channel": worker.spec.name, "error": str(exc)})
            return None
        if result.corrected:
            self.engine.metrics.clock_corrections.inc()
        if result.action != "none":
            log.info(
                f"concentrator clock {result.action}",
                extra={
                    "channel": worker.spec.name,
                    "drift_s": round(result.drift_before, 3),
                    "reason": result.reason,
                    "after_s": None if result.drift_after is None else round(result.drift_after, 3),
                },
            )
        return result


async def run(engine: ConcentratorHost) -> None:
    """The duties' entry point (given to the engine by the composition root, headend/daemon.py)."""
    await ConcentratorDuties(engine).run()
