"""The daemon's side of meter requests (migration 0054): the desk inserts a read or a re-collection,
the daemon whose engine reads the meter's channel answers it.

A built-in duty of the engine, so only the active daemon works requests (a standby's engine does not
run). At start it publishes the ``[requests]`` bounds the database enforces and fails what a
predecessor left running. It LISTENs on the requests' channel: each new request starts its channel's
lane (one per channel, one request at a time) unless one runs; a lane claims its channel's oldest
request (compare-and-set requested -> running) only when the bus can take it: a dial-in channel's
device must be connected (else the request waits, with that reason, until it connects or expires),
and a request job never follows another while scheduled reads wait (:class:`Turns`: at most one
request job between two scheduled jobs), so requests cannot starve the schedule. A meter this daemon
does not read, or one quarantined, fails at once with the reason. Nothing polls for new requests:
a slow sweep (``[requests] sweep_every``) expires the overdue and looks again at channels waiting
for their device. Each request the daemon ends is counted (``headend_meter_requests_total{kind,state}``)
and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

import asyncpg

from headend.config import HeadendConfig
from headend.engine.context import EngineContext
from headend.engine.health import HealthBook
from headend.engine.jobs import Priority
from headend.engine.model import MeterSpec
from headend.engine.ports import DriverPort
from headend.engine.worker import ChannelWorker
from headend.metrics import EngineMetrics
from headend.requests.work import Outcome, PartlyDone, failure_reason, read_meter, recollect
from headend.store.meter_requests import (
    MeterRequest,
    Result,
    claim_request,
    expire_overdue,
    fail_interrupted,
    finish_request,
    listen,
    publish_limits,
    waiting_requests,
)
from headend.store.reading import Reading

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
EXPIRED = "no daemon claimed the request before it expired (is headend run running, reading this meter?)"
INTERRUPTED = "the daemon stopped while working this request; ask again"


class RequestHost(Protocol):
    """What the duty needs of the running engine (:class:`headend.engine.engine.Engine`)."""

    @property
    def config(self) -> HeadendConfig: ...

    @property
    def dsn(self) -> str: ...

    @property
    def pool(self) -> asyncpg.Pool: ...

    @property
    def metrics(self) -> EngineMetrics: ...

    @property
    def workers(self) -> dict[int, ChannelWorker]: ...

    @property
    def port(self) -> DriverPort: ...

    @property
    def health(self) -> HealthBook: ...

    @property
    def ctx(self) -> EngineContext: ...


class Turns:
    """A lane's share of its bus: before each request job, wait for a scheduled job to be taken if
    one waits and the bus's last job was this lane's."""

    def __init__(self, worker: ChannelWorker) -> None:
        self.worker = worker
        self.since: int | None = None

    async def __call__(self) -> None:
        if self.since is not None:
            await self.worker.turn_of(Priority.SCHEDULED, self.since)
        self.since = self.worker.ran(Priority.SCHEDULED)


@dataclass(slots=True)
class _Storer:
    """The engine's writer, as the work stores readings (counted by quality like a cycle's)."""

    ctx: EngineContext
    config: HeadendConfig
    pool: asyncpg.Pool
    port: DriverPort

    async def store(self, readings: list[Reading]) -> None:
        await self.ctx.submit(readings)


class Refused(Exception):
    """A request the daemon fails without touching the bus, with this line as its reason."""


def _quarantine(health: HealthBook, meter: MeterSpec) -> str | None:
    """Why ``meter`` is skipped now, or None."""
    if not health.quarantined(meter.id):
        return None
    state = health.of(meter.id)
    until = datetime.now(UTC) + timedelta(seconds=state.quarantined_until - time.monotonic())
    return (
        f"meter {meter.label} is quarantined until {until.isoformat(timespec='seconds')} after"
        f" {state.failures} failed exchanges (last: {state.last_error}); ask again then"
    )


class MeterRequests:
    """The duty's state: a lane per channel working requests, the channels waiting for their device."""

    def __init__(self, engine: RequestHost) -> None:
        self.engine = engine
        self.sweep_every = engine.config.requests.sweep_every
        self._wake = asyncio.Event()
        self._lanes: dict[int, asyncio.Task[None]] = {}
        self._offline: dict[int, str] = {}  # channel id -> why its requests wait
        self._listener: asyncpg.Connection | None = None
        self._started = False
        self._unreachable = False
        self._full_pass = True  # look at every waiting request (start, a new listener, a notification)
        self._poked: set[int] = set()  # channels whose lane must look again before it ends

    async def run(self) -> None:
        try:
            while True:
                await self._keep_listening()
                try:
                    if not self._started:
                        await self._start()
                    await self.pass_once()
                    if self._unreachable:
                        self._unreachable = False
                        log.info("meter requests looked at again")
                except DATABASE_ERRORS as exc:
                    self._full_pass = True  # what was notified meanwhile is looked at on the next sweep
                    if not self._unreachable:  # once per outage
                        self._unreachable = True
                        log.warning("meter requests not looked at", extra={"error": str(exc)})
                except Exception:  # never the end of the duty: logged with its traceback, retried
                    self._full_pass = True
                    self.engine.metrics.failed_passes.labels("meter_requests").inc()
                    log.exception("meter requests pass failed")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.sweep_every):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            for task in self._lanes.values():
                task.cancel()
            if self._listener is not None:
                self._listener.terminate()

    async def _start(self) -> None:
        """Publish the bounds; fail what a predecessor left running (once, when the database answers)."""
        bounds = self.engine.config.requests
        await publish_limits(
            self.engine.pool,
            {
                "per_operator": bounds.per_operator,
                "per_channel": bounds.per_channel,
                "max_range_days": bounds.max_range_days,
            },
        )
        for request_id, kind in await fail_interrupted(self.engine.pool, INTERRUPTED):
            self._count(request_id, kind, "failed", INTERRUPTED)
        self._started = True
        log.info(
            "meter requests taken",
            extra={
                "per_operator": bounds.per_operator,
                "per_channel": bounds.per_channel,
                "max_range_days": bounds.max_range_days,
            },
        )

    def _notified(self, _conn: object, _pid: object, _channel: object, payload: object) -> None:
        if str(payload).endswith(" requested"):
            self._full_pass = True
            self._wake.set()

    async def _keep_listening(self) -> None:
        """A connection of its own that LISTENs (reopened when lost, then a full pass)."""
        if self._listener is not None and not self._listener.is_closed():
            return
        self._listener = None
        try:
            listener = await asyncpg.connect(self.engine.dsn, timeout=CONNECT_TIMEOUT_S)
            await listen(listener, self._notified)
        except DATABASE_ERRORS:
            return  # the pass says the database is unreachable; tried again on the next sweep
        self._listener = listener
        self._full_pass = True

    async def pass_once(self) -> None:
        """Expire the overdue requests; start the lane of each channel with a request waiting."""
        pool = self.engine.pool
        for channel_id, why in list(self._offline.items()):
            said = f"{why} (the request waited for it until it expired)"
            for request_id, kind in await expire_overdue(pool, said, channel_id):
                self._count(request_id, kind, "expired", said)
        for request_id, kind in await expire_overdue(pool, EXPIRED):
            self._count(request_id, kind, "expired", EXPIRED)
        channels = set(self._offline)
        if self._full_pass:
            self._full_pass = False
            channels |= {r.channel_id for r in await waiting_requests(pool)}
        for channel_id in sorted(channels):
            lane = self._lanes.get(channel_id)
            if lane is None or lane.done():
                self._offline.pop(channel_id, None)
                task = asyncio.create_task(self._lane(channel_id), name=f"meter-requests-{channel_id}")
                self._lanes[channel_id] = task
            else:
                self._poked.add(channel_id)

    async def _lane(self, channel_id: int) -> None:
        """Work the channel's requests, oldest first, one at a time, while its bus can take them."""
        try:
            await self._lane_body(channel_id)
        except DATABASE_ERRORS as exc:  # looked at again on the next sweep
            self._full_pass = True
            log.warning(
                "meter requests of a channel not looked at",
                extra={"channel_id": channel_id, "error": str(exc)},
            )
        except Exception:
            self._full_pass = True
            self.engine.metrics.failed_passes.labels("meter_requests").inc()
            log.exception("meter requests lane failed", extra={"channel_id": channel_id})

    async def _lane_body(self, channel_id: int) -> None:
        worker = self.engine.workers.get(channel_id)
        turns = Turns(worker) if worker is not None else None
        while True:
            self._poked.discard(channel_id)
            waiting = await waiting_requests(self.engine.pool, [channel_id])
            if not waiting:
                if channel_id in self._poked:
                    continue  # a request came while it looked
                return
            request = waiting[0]
            if worker is not None and self.engine.port.online(worker.spec) is False:
                self._offline[channel_id] = f"channel {worker.spec.name}'s device is not connected"
                return
            if not await claim_request(self.engine.pool, request.id):
                continue  # cancelled or expired meanwhile
            await self._work(request, worker, turns)

    async def _work(self, request: MeterRequest, worker: ChannelWorker | None, turns: Turns | None) -> None:
        state: Literal["done", "failed"] = "failed"
        result: Result | None = None
        counts: tuple[int, int] | None = None
        try:
            meter = None if worker is None else worker.meters.get(request.meter_id)
            if worker is None or meter is None or turns is None:
                raise Refused(
                    f"meter {request.meter} is not read by the running daemon (its channel"
                    f" {request.channel!r} or the meter is disabled, or left out of polling)"
                )
            quarantined = _quarantine(self.engine.health, meter)
            if quarantined is not None:
                raise Refused(quarantined)
            engine = self.engine
            host = _Storer(engine.ctx, engine.config, engine.pool, engine.port)
            outcome: Outcome
            if request.kind == "read":
                quantities = request.quantities or engine.config.plan_for(meter.model).quantities
                outcome = await read_meter(host, worker, meter, quantities, turns)
            else:
                assert request.range_from is not None and request.range_to is not None
                outcome = await recollect(host, worker, meter, request.range_from, request.range_to, turns)
            state, reason, result, counts = "done", outcome.reason, outcome.result, outcome.counts
        except Refused as exc:
            reason = str(exc)
        except PartlyDone as exc:
            reason, counts = str(exc), exc.counts
        except Exception as exc:  # the job's or the writer's one line, recorded as the reason
            reason = failure_reason(exc)
        await self._record(request.id, state, reason, result, counts)
        self._count(request.id, request.kind, state, reason, meter=request.meter, channel=request.channel)

    async def _record(
        self,
        request_id: int,
        state: Literal["done", "failed"],
        reason: str,
        result: Result | None,
        counts: tuple[int, int] | None,
    ) -> None:
        """Record the outcome, retried while the database does not answer (the request stays running)."""
        said = False
        while True:
            try:
                await finish_request(self.engine.pool, request_id, state, reason, result, counts)
                return
            except DATABASE_ERRORS as exc:
                if not said:
                    said = True
                    log.warning(
                        "meter request outcome not recorded yet",
                        extra={"request": request_id, "error": str(exc)},
                    )
            await asyncio.sleep(self.sweep_every)

    def _count(self, request_id: int, kind: str, state: str, reason: str, **details: object) -> None:
        self.engine.metrics.meter_requests.labels(kind, state).inc()
        level = logging.INFO if state == "done" else logging.WARNING
        log.log(level, f"meter request {state}", extra={"request": request_id, "reason": reason, **details})


async def run(engine: RequestHost) -> None:
    """The duty's entry point (given to the engine by the composition root, headend/daemon.py)."""
    await MeterRequests(engine).run()
