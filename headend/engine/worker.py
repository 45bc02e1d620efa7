"""One worker per channel: a priority queue of meter jobs, run one at a time on the bus.

The queue is a heap of ``(priority, seq, job)`` tuples (compared in C). A job's time limit is one
timer per worker, re-armed lazily: it cancels the job's body once the job's deadline has passed and
the body's cancellation becomes a TimeoutError, as with ``asyncio.timeout`` but without a new timer
per job.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from headend.engine.health import HealthBook
from headend.engine.jobs import Job, Priority, Quarantined, WorkerStopped
from headend.engine.model import ChannelSpec, MeterSpec
from headend.engine.ports import answered_errors, offline_errors
from headend.metrics import EngineMetrics
from headend.services import LeaseMoved
from headend.store.records import CommEventRecord

if TYPE_CHECKING:
    from headend.drivers.base import MeterDriver
    from headend.transport import Bus

log = logging.getLogger(__name__)

# (channel spec) -> an open channel; (channel, meter spec) -> the meter's driver.
ChannelOpener = Callable[[ChannelSpec], Awaitable["Bus"]]
DriverMaker = Callable[["Bus", MeterSpec], "MeterDriver"]
VERIFY_EXCHANGES = 4  # the time a connection's identity check may add to the job that runs it


class ConnectionVerifier(Protocol):
    """Verifies the meters behind a dial-in bus's new connection (the engine's ``DriverPort``)."""

    def verification_due(self, channel: Bus | None) -> bool: ...

    async def verify_connection(self, channel: Bus, meters: list[tuple[MeterSpec, MeterDriver]]) -> None: ...

    def unverified(self, channel: Bus | None) -> bool: ...

    def verify_again(self, channel: Bus | None) -> None: ...


# channel statistics that count replies gone wrong: a damaged checksum, bytes that were no frame
# (garbage, a truncated reply), a frame for another meter or request (wrong address, stray reply)
LINE_EVENTS = ("checksum_errors", "noise_bytes", "unexpected_frames")
REPLY_EVENTS = (*LINE_EVENTS, "refusals")  # + abnormal replies / Modbus exceptions (the driver's count)

T = TypeVar("T")


def _reason(exc: BaseException) -> str:
    return "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__


def _line_counts(channel: Any, driver: Any) -> tuple[int, ...]:
    """The channel's line-event counters and the driver's count of refusals (abnormal replies)."""
    stats = getattr(channel, "stats", None)
    return (*(getattr(stats, name, 0) for name in LINE_EVENTS), getattr(driver, "refusals", 0))


def _identities(meters: Iterable[MeterSpec]) -> set[tuple[int, str | None, int | None, int | None]]:
    """What identifies each meter behind a dial-in device: its recorded number, its Pn and port."""
    return {(m.id, m.identity, m.pn, m.port) for m in meters}


CommEventSink = Callable[[CommEventRecord], None]
"""Takes a communication event of a meter (timeout, quarantined, quarantine_ended) to be stored."""


class ChannelWorker:
    """Owns one bus: exactly one job (hence one exchange) in flight at a time.

    ``submit`` queues a job and returns its future. ``busy_seconds`` accumulates time spent running
    jobs (for capacity accounting). ``stop`` lets the job in flight finish, then fails the rest with
    :class:`WorkerStopped`.
    """

    def __init__(
        self,
        spec: ChannelSpec,
        meters: list[MeterSpec],
        open_channel: ChannelOpener,
        make_driver: DriverMaker,
        health: HealthBook,
        metrics: EngineMetrics,
        verifier: ConnectionVerifier | None = None,
        comm_events: CommEventSink | None = None,
    ) -> None:
        self.spec = spec
        self.comm_events = comm_events  # told of timeouts and quarantines, to be stored
        self.verifier = verifier  # dial-in buses: each new connection verified before a job uses it
        self.meters = {m.id: m for m in meters}
        self._open_channel = open_channel
        self._make_driver = make_driver
        self.health = health
        self.metrics = metrics
        self._heap: list[tuple[int, int, Job]] = []
        self._queued = [0] * len(Priority)  # jobs waiting, by priority
        self._ran = [0] * len(Priority)  # jobs taken off the queue, by priority
        self._turns: list[asyncio.Future[None]] = []  # waiting for the next job to be taken
        self._wakeup: asyncio.Future[None] | None = None  # set while the worker waits for a job
        self.busy_seconds = 0.0
        self.channel: Bus | None = None
        self._drivers: dict[int, MeterDriver] = {}
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._deadline = math.inf  # when the running job's body must have finished
        self._guard: asyncio.TimerHandle | None = None  # armed at or before the deadline
        self._expired = False  # the guard cancelled the running body
        metrics.queue_depth.labels(spec.name).set_function(self.queue_size)
        self._counters: dict[str, tuple[Any, Any]] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"channel-{self.spec.name}")

    def update_meters(self, meters: list[MeterSpec]) -> None:
        """Replace the meter list (inventory reload); drivers of changed meters are rebuilt."""
        new = {m.id: m for m in meters}
        for meter_id, old in self.meters.items():
            if new.get(meter_id) != old:
                self._drivers.pop(meter_id, None)
        if self.verifier is not None and _identities(meters) != _identities(self.meters.values()):
            self.verifier.verify_again(self.channel)  # what identifies the meters changed: check again
        self.meters = new

    def queue_size(self) -> int:
        """Jobs waiting (the ``headend_queue_depth`` gauge reads it when scraped)."""
        return len(self._heap)

    def submit(self, job: Job[T]) -> asyncio.Future[T]:
        """Queue ``job``; its future resolves with the body's result (or fails at once when stopping)."""
        if self._stopping:
            job.future.set_exception(WorkerStopped(f"channel {self.spec.name} is stopping"))
        else:
            self._put(job)
        return job.future

    def queued(self, priority: Priority) -> int:
        """Jobs of ``priority`` waiting."""
        return self._queued[priority]

    def ran(self, priority: Priority) -> int:
        """Jobs of ``priority`` taken off the queue so far (run, or dropped as cancelled)."""
        return self._ran[priority]

    async def turn_of(self, priority: Priority, since: int) -> None:
        """Return once a job of ``priority`` was taken after :meth:`ran` counted ``since``, or none of
        them waits (a service yielding the bus to the schedule: one of its jobs between two scheduled)."""
        while self._ran[priority] == since and self._queued[priority] > 0 and not self._stopping:
            turn = asyncio.get_running_loop().create_future()
            self._turns.append(turn)
            await turn

    def _taken(self, job: Job) -> Job:
        self._queued[job.priority] -= 1
        self._ran[job.priority] += 1
        turns, self._turns = self._turns, []
        for turn in turns:
            if not turn.done():
                turn.set_result(None)
        return job

    def _put(self, job: Job) -> None:
        heapq.heappush(self._heap, (job.priority, job.seq, job))
        self._queued[job.priority] += 1
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _get(self) -> Job:
        while not self._heap:
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None
        return self._taken(heapq.heappop(self._heap)[2])

    async def stop(self) -> None:
        """Finish the job in flight, drop the queued ones, close the channel."""
        self._stopping = True
        self._put(Job(Priority.CONTROL, kind="stop"))
        if self._task is not None:
            await self._task
        while self._heap:
            job = self._taken(heapq.heappop(self._heap)[2])
            if not job.future.done():
                job.future.set_exception(WorkerStopped(f"channel {self.spec.name} stopped"))
        if self._guard is not None:
            self._guard.cancel()
        await self._close_channel()

    async def _close_channel(self) -> None:
        channel, self.channel = self.channel, None
        self._drivers.clear()
        close = getattr(channel, "close", None)
        if close is not None:
            result = close()
            if asyncio.iscoroutine(result):
                await result

    async def _driver(self, meter: MeterSpec) -> MeterDriver:
        if self.channel is None:
            self.channel = await self._open_channel(self.spec)
            self._make_all_drivers(self.channel)
        driver = self._drivers.get(meter.id)
        if driver is None:
            driver = self._drivers[meter.id] = self._make_driver(self.channel, meter)
        return driver

    def _make_all_drivers(self, channel: Bus) -> None:
        """Every meter's driver as the channel opens: drivers behind one concentrator batch their
        reads, so each must be known before the first read (a meter whose driver cannot be made
        fails its own job later, not this one)."""
        for other in self.meters.values():
            try:
                self._drivers[other.id] = self._make_driver(channel, other)
            except Exception:
                continue

    def _meter_drivers(self) -> list[tuple[MeterSpec, MeterDriver]]:
        """The worker's meters with their drivers (those that could be made), by meter id."""
        return [
            (m, self._drivers[m.id])
            for m in sorted(self.meters.values(), key=lambda m: m.id)
            if m.id in self._drivers
        ]

    async def _run(self) -> None:
        while True:
            job = await self._get()
            if job.kind == "stop" and self._stopping:
                return
            if job.future.done():  # cancelled by its owner (e.g. a stale cycle)
                continue
            try:
                await self._execute(job)
            except Exception as exc:  # a bug must cost one job, never the bus
                meter = self.meters.get(job.meter_id)
                log.exception(
                    "worker error",
                    extra={
                        "channel": self.spec.name,
                        "meter_id": job.meter_id,
                        "meter": meter.label if meter else None,
                    },
                )
                if not job.future.done():
                    job.future.set_exception(exc)

    async def _execute(self, job: Job) -> None:
        meter = self.meters.get(job.meter_id)
        if meter is None:
            job.future.set_exception(LookupError(f"meter {job.meter_id} is not on channel {self.spec.name}"))
            return
        if job.skip_if_quarantined and self.health.quarantined(meter.id):
            job.future.set_exception(Quarantined(f"meter {meter.label} is quarantined"))
            return
        assert job.body is not None
        timeout = self.health.job_limit(meter.id, job.exchanges) + job.wait_s
        loop = asyncio.get_running_loop()
        started = loop.time()
        driver = self._drivers.get(meter.id)
        line_before = _line_counts(self.channel, driver)
        try:
            if driver is None:
                driver = await self._driver(meter)
            verifier = self.verifier
            due = verifier is not None and verifier.verification_due(self.channel)
            if due:
                timeout += self.health.job_limit(meter.id, VERIFY_EXCHANGES)
            self._arm(loop, started + timeout)
            try:
                if due and verifier is not None and self.channel is not None:
                    await verifier.verify_connection(self.channel, self._meter_drivers())
                result = await job.body(driver)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._expired and task is not None and task.uncancel() == 0:
                    raise TimeoutError from None  # the job's time limit, not a shutdown
                raise
            finally:
                self._deadline = math.inf
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a meter error must never stop the worker
            elapsed = loop.time() - started
            self.busy_seconds += elapsed
            self._line_events(meter, driver, line_before)
            self._failed(job, meter, exc)
            if isinstance(exc, ConnectionError):  # the channel itself broke: reopen on the next job
                await self._close_channel()
            if not job.future.done():
                job.future.set_exception(exc)
            return
        elapsed = loop.time() - started
        self.busy_seconds += elapsed
        if _line_counts(self.channel, driver) != line_before:
            self._line_events(meter, driver, line_before)
        was_quarantined = self.health.of(meter.id).quarantines > 0
        self.health.succeeded(meter.id, elapsed / max(1, job.exchanges))
        if was_quarantined:
            self._comm_event(meter, "quarantine_ended", {"job": job.kind})
        counters = self._counters.get(job.kind)
        if counters is None:
            counters = self._counters[job.kind] = (
                self.metrics.reads.labels(self.spec.name, job.kind),
                self.metrics.job_seconds.labels(job.kind),
            )
        counters[0].inc()
        counters[1].observe(elapsed)
        if self.verifier is not None and self.verifier.unverified(self.channel):
            job.unverified = True  # nothing verified who answered: its readings are stored as suspect
            self.metrics.unverified_jobs.labels(self.spec.name, job.kind).inc()
        if not job.future.done():
            job.future.set_result(result)

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Make the worker's timer cancel the running body at ``deadline`` (re-armed lazily)."""
        self._deadline, self._expired = deadline, False
        guard = self._guard
        if guard is None or guard.when() > deadline:
            if guard is not None:
                guard.cancel()
            self._guard = loop.call_at(deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        """The worker's timer fired: cancel the running body if its deadline passed, else re-arm."""
        self._guard = None
        deadline = self._deadline
        if deadline == math.inf or self._task is None:
            return
        loop = asyncio.get_running_loop()
        if deadline - loop.time() <= 0.001:
            self._expired = True
            self._task.cancel()
        else:
            self._guard = loop.call_at(deadline, self._check_deadline)

    def _line_events(self, meter: MeterSpec, driver: Any, before: tuple[int, ...]) -> None:
        """Count and log the damaged, stray or abnormal replies seen while talking to ``meter``.

        ``before`` was taken when the job started; a channel or driver made during the job started
        from zero.
        """
        after = _line_counts(self.channel, driver)
        seen = {
            kind: now - was for kind, now, was in zip(REPLY_EVENTS, after, before, strict=True) if now > was
        }
        if not seen:
            return
        for kind, count in seen.items():
            self.metrics.line_events.labels(self.spec.name, kind).inc(count)
        details = ", ".join(f"{count} {kind.replace('_', ' ')}" for kind, count in seen.items())
        if "refusals" in seen:
            details += f" (last: {getattr(driver, 'last_refusal', '')})"
        log.warning(
            f"bad replies from meter {meter.label}: {details}",
            extra={"meter": meter.label, "meter_id": meter.id, "channel": self.spec.name, **seen},
        )

    def _comm_event(self, meter: MeterSpec, kind: str, details: dict[str, object]) -> None:
        if self.comm_events is not None:
            at = datetime.now(UTC)
            self.comm_events(CommEventRecord(kind, meter.id, meter.channel_id, at, json.dumps(details)))

    def _failed(self, job: Job, meter: MeterSpec, exc: BaseException) -> None:
        if isinstance(exc, offline_errors()):  # a dial-in device not connected: not the meter's failure
            self.metrics.offline_jobs.labels(self.spec.name, job.kind).inc()
            return
        if isinstance(exc, LeaseMoved):  # another daemon holds the channel now: not the meter's failure
            self.metrics.failures.labels(self.spec.name, job.kind, "lease_moved").inc()
            log.info(
                "write not sent: the channel's lease moved", extra={"meter": meter.label, "error": str(exc)}
            )
            return
        reason = _reason(exc)
        self.metrics.failures.labels(self.spec.name, job.kind, reason).inc()
        if reason == "timeout":
            self.metrics.timeouts.labels(self.spec.name).inc()
            self._comm_event(meter, "timeout", {"job": job.kind, "error": str(exc)})
        if isinstance(exc, answered_errors()):  # the meter answered: healthy, just not able or willing
            log.info(
                "meter refused the request",
                extra={
                    "meter": meter.label,
                    "meter_id": meter.id,
                    "channel": self.spec.name,
                    "kind": job.kind,
                    "reason": reason,
                    "error": str(exc),
                },
            )
            return
        if self.health.failed(meter.id, f"{reason}: {exc}"):
            state = self.health.of(meter.id)
            until = datetime.now(UTC) + timedelta(seconds=state.quarantined_until - time.monotonic())
            details = {"failures": state.failures, "until": until.isoformat(), "error": f"{reason}: {exc}"}
            self._comm_event(meter, "quarantined", details)
            log.warning(
                f"meter {meter.label} quarantined",
                extra={
                    "meter": meter.label,
                    "meter_id": meter.id,
                    "channel": self.spec.name,
                    "failures": state.failures,
                    "backoff_s": round(state.quarantined_until - time.monotonic(), 1),
                    "error": str(exc),
                },
            )
        else:
            log.info(
                f"meter {meter.label} job failed",
                extra={
                    "meter": meter.label,
                    "meter_id": meter.id,
                    "channel": self.spec.name,
                    "kind": job.kind,
                    "reason": reason,
                    "error": str(exc),
                },
            )
