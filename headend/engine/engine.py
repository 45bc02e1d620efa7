"""The polling engine: composes the daemon's jobs and exposes the hooks other services use.

The jobs live in their own modules: timers (:mod:`headend.engine.timers`), inventory sync
(:mod:`~headend.engine.inventory_sync`), read cycles (:mod:`~headend.engine.cycles`), backfill
(:mod:`~headend.engine.backfilling`) and housekeeping: clocks, events, storage upkeep, gauges
(:mod:`~headend.engine.housekeeping`). They share an :class:`~headend.engine.context.EngineContext`.

Hooks for other services running in the daemon (e.g. fee control):

* ``await engine.control(meter_id, body)`` runs ``body(driver)`` on the meter's bus at top
  priority (ahead of every read) and returns its result or raises its error. ``body`` is an async
  callable taking the meter's driver, e.g. ``lambda d: d.switch("off", operator="ops1")``.
* ``await engine.read_now(meter_id, quantities)`` reads at on-demand priority and returns
  ``{quantity: value}`` (``store=True`` also stores them, quality ``actual``, source ``on_demand``).
* Services named in ``[engine] services`` (``"module:function"``) are called as
  ``function(engine)`` after start-up; a returned coroutine runs as a task until shutdown.
  The concentrator duties (:mod:`headend.concentrators.service`) always run, built in.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from headend.config import HeadendConfig
from headend.engine.backfilling import Backfiller
from headend.engine.context import EngineContext
from headend.engine.cycles import Cycles
from headend.engine.health import HealthBook
from headend.engine.heap import HeapKeeper
from headend.engine.housekeeping import Housekeeping
from headend.engine.inventory_sync import InventorySync
from headend.engine.jobs import Job, Priority
from headend.engine.leases import Leases
from headend.engine.model import InventorySnapshot
from headend.engine.ports import DriverPort, dialin_device, values_of
from headend.engine.timers import Timers
from headend.engine.timing import floor_boundary, next_boundary
from headend.engine.worker import ChannelWorker
from headend.metrics import EngineMetrics
from headend.services import EngineServices, JobBody, LeaseMoved, Service
from headend.store.cluster import check_write_fence
from headend.store.reading import Reading
from headend.store.writer import UNAVAILABLE, ReadingWriter
from headend.vocabulary import ReadingQuality

if TYPE_CHECKING:
    from headend.transport.listener import Inbound

log = logging.getLogger(__name__)

MAINTENANCE_EVERY = 3600.0  # storage upkeep (partitions ahead, daily aggregate) on the native layout

T = TypeVar("T")

Duty = Callable[["Engine"], Coroutine[Any, Any, None]]
"""A built-in duty: runs, given the started engine, until cancelled when it stops."""


class Engine:
    """Runs the daemon's work; ``start`` and ``stop`` bracket its life (see the module docstring)."""

    def __init__(
        self,
        config: HeadendConfig,
        dsn: str,
        writer: ReadingWriter,
        port: DriverPort,
        metrics: EngineMetrics | None = None,
        *,
        duties: Sequence[Duty] = (),
    ) -> None:
        self.config = config
        self.duties = tuple(duties)
        self.dsn = dsn
        self.writer = writer
        self.port = port
        self.metrics = metrics or EngineMetrics()
        self.health = HealthBook(config.timeouts, config.health)
        self.interval = config.polling.interval
        self.ctx = EngineContext(config, port, self.metrics, self.health, writer)
        self.sync = InventorySync(self.ctx)
        self.backfill = Backfiller(self.ctx)
        self.cycles = Cycles(self.ctx, self.sync, self.backfill.gappy.add, self.backfill.start)
        self.housekeeping = Housekeeping(self.ctx, self.sync)
        self.timers = Timers()
        self._services: list[asyncio.Task[Any]] = []
        self.leases = Leases(config.cluster, self.metrics) if config.cluster.enabled else None
        self._renewing = False
        self._services_wanted: list[str] = []
        if self.leases is not None:
            self.sync.owns = self.leases.owns
            self.ctx.write_fence = self.write_fence
            if port.hub is not None:  # a device connecting here: its channel is this daemon's
                port.hub.on_bound = self._dialin_bound
                port.hub.on_lost = self._dialin_lost
                self.leases.connected = self._dialin_connected

    @property
    def pool(self) -> asyncpg.Pool:
        """The engine's connection pool (while running)."""
        return self.ctx.db

    @property
    def workers(self) -> dict[int, ChannelWorker]:
        """One worker per enabled channel, by channel id."""
        return self.sync.workers

    @property
    def inventory(self) -> InventorySnapshot:
        return self.sync.snapshot

    @property
    def heap(self) -> HeapKeeper:
        return self.cycles.heap

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the inventory, start workers and the timers, backfill what is missing.

        The database may be unreachable: the pool connects on demand (with the writer's deadlines),
        the inventory comes from the cache and readings go to the spool until it answers."""
        self.ctx.pool = await asyncpg.create_pool(
            self.dsn,
            min_size=0,
            max_size=4,
            timeout=self.writer.connect_timeout,
            command_timeout=self.writer.command_timeout,
            server_settings={"jit": "off"},  # short statements: compiling them costs more than running
        )
        await self.writer.start()
        if self.leases is not None:
            await self.leases.renew(self.ctx.pool)
        await self.reload_inventory()
        polling, backfill = self.config.polling, self.config.backfill
        now = datetime.now(UTC)
        offset = timedelta(seconds=polling.offset)
        first = next_boundary(now - offset, self.interval) + offset  # the next boundary's read time
        half = timedelta(seconds=self.interval / 2)  # mid-interval: never near a boundary
        timers, tasks = self.timers, self.ctx.tasks
        timers.every("cycle", self.interval, first, lambda: self.run_cycle(self._current_interval()))
        timers.every(
            "inventory",
            polling.inventory_reload,
            now + timedelta(seconds=polling.inventory_reload),
            lambda: tasks.spawn(self.reload_inventory(), "inventory"),
        )
        timers.every("gauges", min(5.0, self.interval), now, self.housekeeping.refresh_gauges)
        timers.every("maintenance", MAINTENANCE_EVERY, now + half, self._maintenance)
        if self.leases is not None:
            renew = self.config.cluster.renew
            first_renewal = now + timedelta(seconds=renew)
            timers.every("leases", renew, first_renewal, lambda: tasks.spawn(self._renew_leases(), "leases"))
        if backfill.enabled:
            retry = timedelta(seconds=backfill.retry_every)
            timers.every("backfill", backfill.retry_every, now + retry, self._backfill_all)
        if self.config.clock.enabled:
            check = self.config.clock.check_every
            timers.every("clock", check, first + half, lambda: self.housekeeping.check_all("clock"))
        if self.config.events.enabled:
            every = self.config.events.collect_every
            timers.every("events", every, first + half, lambda: self.housekeeping.check_all("events"))
        timers.start()
        if backfill.enabled:
            upto = floor_boundary(now - offset, self.interval)
            for worker in self.workers.values():
                self.backfill.start(worker, upto)
        for target in self.config.engine.services:
            self._start_service(target)
        self._start_duties()
        log.info(
            "engine started",
            extra={
                "channels": len(self.workers),
                "interval_s": self.interval,
                "first_cycle": first.isoformat(),
            },
        )

    async def stop(self) -> None:
        """Stop the timers, let each bus finish its exchange in flight, flush the writer."""
        self.ctx.tasks.stopping = True
        await self.timers.stop()
        for task in self._services:
            task.cancel()
        await asyncio.gather(*self._services, return_exceptions=True)
        await self.sync.stop()
        if self.leases is not None and self.ctx.pool is not None:
            await self.leases.leave(self.ctx.pool)  # exchanges in flight done: the next owner starts now
        await self.ctx.tasks.drain()  # cycles, backfills and checks end quickly once their jobs are refused
        await self.writer.close()
        if self.ctx.pool is not None:
            try:
                async with asyncio.timeout(self.writer.deadline):
                    await self.ctx.pool.close()
            except TimeoutError:  # a hung database: leave its connections behind
                self.ctx.pool.terminate()
        log.info("engine stopped", extra={"written": self.writer.written, "spooled": self.writer.spooled})

    def _maintenance(self) -> None:
        """Storage upkeep, on the elected daemon only in a cluster."""
        if self.elected() is not None:
            self.ctx.tasks.spawn(self.housekeeping.maintenance(), "maintenance")

    def elected(self) -> tuple[str, int] | None:
        """The services' lease this daemon runs the once-only services under (see headend.services)."""
        return ("", 0) if self.leases is None else self.leases.elected()

    async def write_fence(self, meter_id: int) -> None:
        """Right before a clock or parameter write frame: the database refuses unless this daemon holds
        the meter's channel lease at its current epoch (nothing to check outside a cluster)."""
        lease = self.lease_of(meter_id)
        if lease == ("", 0):
            return
        if lease is None:
            raise LeaseMoved(f"meter {meter_id}: write not sent: its channel is another daemon's")
        try:
            async with self.ctx.db.acquire() as conn:
                await check_write_fence(conn, meter_id, *lease)
        except asyncpg.InsufficientPrivilegeError as exc:
            raise LeaseMoved(str(exc)) from None

    def _dialin_channel(self, device: tuple[str, str]) -> int | None:
        for channel_id, spec in self.sync.full.channels.items():
            if dialin_device(spec) == device:
                return channel_id
        return None

    def _dialin_connected(self, channel_id: int) -> bool:
        """Whether a dial-in channel's device has a live connection here."""
        spec = self.sync.full.channels.get(channel_id)
        return spec is not None and self.port.alive(spec)

    def _dialin_bound(self, device: tuple[str, str], inbound: Inbound) -> None:
        """A dial-in device connected here: take its channel's lease (next epoch), start its worker;
        another member with the device connected keeps it (this connection is a conflict)."""
        channel_id = self._dialin_channel(device)
        if channel_id is not None and not self.ctx.tasks.stopping:
            self.ctx.tasks.spawn(self._seize(channel_id, inbound), f"seize-{device[1]}")

    def _dialin_lost(self, device: tuple[str, str]) -> None:
        """A dial-in device's connection here closed: its lease says so (another member may take it)."""
        if self.ctx.tasks.stopping:  # the engine leaves the cluster: its leases go anyway
            return
        channel_id = self._dialin_channel(device)
        if channel_id is not None and self.leases is not None and self.leases.owns(channel_id):
            self.ctx.tasks.spawn(self.leases.disconnected(self.ctx.db, channel_id), f"hung-up-{device[1]}")

    async def _seize(self, channel_id: int, inbound: Inbound) -> None:
        """Claim a dial-in channel for the connection bound here: refused while another member holds
        it with the device connected (a conflict); a claim that would move the lease here (a new
        epoch) waits until the connection proved its identity (``_proven``)."""
        assert self.leases is not None
        try:
            holding = await self.leases.holding(self.ctx.db, channel_id)
            if holding is None or holding.owner != self.leases.member:
                if holding is not None and holding.connected:
                    if self.port.hub is not None:
                        self.port.hub.connected_elsewhere(inbound, holding.owner)
                    return
                if not await self._proven(channel_id, inbound):
                    return
            claim = await self.leases.seize(self.ctx.db, channel_id)
        except (*UNAVAILABLE, asyncpg.PostgresError) as exc:
            log.warning("dial-in channel not taken", extra={"channel_id": channel_id, "error": str(exc)})
            return
        if not claim.taken:
            if self.port.hub is not None:
                self.port.hub.connected_elsewhere(inbound, claim.holder)
            return
        if claim.fresh or channel_id not in self.workers:
            await self._follow_leases()

    async def _proven(self, channel_id: int, inbound: Inbound) -> bool:
        """Whether the meters behind a new connection are the channel's (or nothing can tell), before
        its claim moves the lease here; a connection not proven is closed (its redial tries again)."""
        full = self.sync.full
        spec = full.channels.get(channel_id)
        if spec is None:
            return False
        if await self.port.prove_identity(spec, full.meters_by_channel.get(channel_id, [])):
            return not inbound.closed
        inbound.close("unproven")
        return False

    async def _renew_leases(self) -> None:
        """One lease renewal; workers started for channels taken, stopped for channels let go."""
        assert self.leases is not None
        if self._renewing:  # a slow database: the renewal in flight covers this one
            return
        self._renewing = True
        try:
            if not await self.leases.renew(self.ctx.db):
                return
            await self._follow_leases()
        finally:
            self._renewing = False

    async def _follow_leases(self) -> None:
        """Workers started for the channels taken, stopped for those let go (then released)."""
        assert self.leases is not None
        before = set(self.workers)
        self.backfill.gappy |= await self.sync.reapply()
        await self.leases.release_stopped(self.ctx.db)
        hub = self.port.hub
        for channel_id in sorted(self.leases.lost):  # seized by the daemon the device connected to
            spec = self.sync.full.channels.get(channel_id)
            device = None if spec is None else dialin_device(spec)
            if hub is not None and device is not None and channel_id not in self.workers:
                hub.drop(device, "moved")
        self.leases.lost.clear()
        if self.config.backfill.enabled:  # a channel taken over: what its last owner missed, at once
            upto = self._current_interval() - timedelta(seconds=self.interval)
            for channel_id in set(self.workers) - before:
                self.backfill.start(self.workers[channel_id], upto)

    def lease_of(self, meter_id: int) -> tuple[str, int] | None:
        """The lease (member, epoch) under which this daemon acts for the meter's channel; None when it
        holds none (another daemon's meter). Outside a cluster: ``("", 0)``, nothing to fence."""
        if self.leases is None:
            return ("", 0)
        channel_id = self.sync.meter_channel.get(meter_id)
        return None if channel_id is None else self.leases.lease_of(channel_id)

    def reachable(self, meter_id: int) -> bool:
        """False only when the meter's channel is a dial-in one whose device is not connected here."""
        channel_id = self.sync.meter_channel.get(meter_id)
        spec = None if channel_id is None else self.sync.full.channels.get(channel_id)
        return spec is None or self.port.online(spec) is not False

    def _current_interval(self) -> datetime:
        offset = timedelta(seconds=self.config.polling.offset)
        return floor_boundary(datetime.now(UTC) - offset, self.interval)

    def _backfill_all(self) -> None:
        """The periodic backfill pass, one interval behind: the current cycle may still be reading."""
        upto = self._current_interval() - timedelta(seconds=self.interval)
        for worker in list(self.workers.values()):
            self.backfill.start(worker, upto)

    def _start_service(self, target: str) -> None:
        module_name, _, func_name = target.partition(":")
        service: Service = getattr(importlib.import_module(module_name), func_name)
        assert self.pool is not None, "services start once the pool is open"
        result = service(
            EngineServices(
                self.config,
                self.pool,
                self.metrics,
                self.control,
                self.lease_of,
                self.elected,
                self.write_fence,
                self.reachable,
            )
        )
        if asyncio.iscoroutine(result):
            self._services.append(asyncio.create_task(result, name=f"service-{target}"))

    def _start_duties(self) -> None:
        """The built-in duties the composition root gave the engine (the concentrators' events,
        archive checks and clocks): not ``[engine] services`` entries, as they need the bus workers,
        which a service is not given."""
        for duty in self.duties:
            name = f"duty-{duty.__module__}.{duty.__qualname__}"
            self._services.append(asyncio.create_task(duty(self), name=name))

    # -- inventory and cycles -----------------------------------------------------------------

    async def reload_inventory(self) -> None:
        """Re-read channels and meters if they changed; add, update and retire workers."""
        self.backfill.gappy |= await self.sync.reload()

    def run_cycle(self, ts: datetime) -> None:
        """Queue every due meter's read plan for interval ``ts`` on every channel."""
        self.cycles.run(ts)

    async def wait_cycles(self) -> None:
        """Wait until every channel's latest cycle has finished and been recorded (benchmarks, tests)."""
        await self.cycles.wait()

    # -- hooks for other services -------------------------------------------------------------

    async def control(
        self, meter_id: int, body: JobBody[T], *, exchanges: int = 8, background: bool = False
    ) -> T:
        """Run ``body(driver)`` for a meter at top priority (relay commands); returns its result.
        ``background``: after the bus's scheduled reads instead, beside backfill (parameter
        campaigns, which must not hold the regular reads back).

        Its time limit is the drivers' relay confirmation window (``[relay]``, the one the port gives
        every driver) plus one poll, on top of the exchanges' own margins: a slow relay is confirmed,
        never abandoned and retried.
        """
        relay = self.port.relay
        job = Job(
            Priority.BACKFILL if background else Priority.CONTROL,
            meter_id=meter_id,
            kind="control",
            body=body,
            exchanges=exchanges,
            skip_if_quarantined=False,
            wait_s=relay.confirm_timeout + relay.confirm_poll,
        )
        return await self.sync.worker_of(meter_id).submit(job)

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
        values = values_of(await self.sync.worker_of(meter_id).submit(job))
        if store:
            ts = floor_boundary(datetime.now(UTC), self.interval)
            quality: ReadingQuality = "suspect" if job.unverified else "actual"
            await self.ctx.submit(
                [Reading(meter_id, q, ts, v, quality, "on_demand") for q, v in values.items()]
            )
        return values
