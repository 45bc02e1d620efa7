"""Keeps one channel worker per enabled channel in step with the inventory in the database (or, when
the daemon starts while the database is unreachable, with the last inventory it cached on disk)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from headend.engine.context import EngineContext
from headend.engine.inventory_cache import CACHE_NAME, load_snapshot, save_snapshot
from headend.engine.model import InventorySnapshot, load_inventory
from headend.engine.vetting import vet
from headend.engine.worker import ChannelWorker
from headend.store.inventory import inventory_version
from headend.store.writer import UNAVAILABLE

log = logging.getLogger("headend.engine.engine")


class InventorySync:
    """``workers`` by channel id and the meter -> channel map, reloaded when the inventory changes."""

    def __init__(self, ctx: EngineContext) -> None:
        self.ctx = ctx
        self.workers: dict[int, ChannelWorker] = {}
        self.snapshot = InventorySnapshot({}, {})
        self.full = InventorySnapshot({}, {})  # before ``owns`` (the snapshot is what this daemon reads)
        self.owns: Callable[[int], bool] | None = None  # a cluster member: the channels it holds
        self.meter_channel: dict[int, int] = {}
        self._version: tuple[object, ...] | None = None
        self._lock = asyncio.Lock()  # two overlapping reloads could give one bus two workers
        self._loaded = False  # from the database or the cache
        self.cache_path = ctx.writer.spool.directory / CACHE_NAME

    async def reload(self) -> set[int]:
        """Re-read channels and meters if they changed; add, update and retire workers.

        Returns the ids of meters that were not in the previous inventory. While the database is
        unreachable the workers keep the inventory they have; the first load of a daemon started
        during an outage comes from the cache (written at every load from the database)."""
        async with self._lock:
            try:
                return await self._reload()
            except UNAVAILABLE as exc:
                if self._loaded:
                    return set()
                self._loaded = True
                snapshot = await asyncio.to_thread(load_snapshot, self.cache_path)
                if snapshot is None:
                    return set()
                log.warning(
                    "database unreachable; reading the meters of the cached inventory",
                    extra={"error": f"{type(exc).__name__}: {exc}", "cache": str(self.cache_path)},
                )
                return await self._apply(snapshot)

    async def _reload(self) -> set[int]:
        async with self.ctx.db.acquire() as conn:
            version = await inventory_version(conn)
            if version == self._version:
                return set()
            snapshot, problems = vet(await load_inventory(conn))
        self._version = version
        for problem in problems:  # logged once per inventory change, counted in a gauge
            log.warning(problem)
        self.ctx.metrics.inventory_refused.set(len(problems))
        self._loaded = True
        try:
            await asyncio.to_thread(save_snapshot, self.cache_path, snapshot)
        except OSError as exc:
            log.warning("inventory not cached", extra={"cache": str(self.cache_path), "error": str(exc)})
        return await self._apply(snapshot)

    async def reapply(self) -> set[int]:
        """Apply the last inventory again (the channels ``owns`` admits changed); new meters' ids."""
        async with self._lock:
            return await self._apply(self.full)

    async def _apply(self, full: InventorySnapshot) -> set[int]:
        ctx = self.ctx
        self.full = full
        snapshot = full
        if self.owns is not None:
            owns = self.owns
            channels = {cid: spec for cid, spec in full.channels.items() if owns(cid)}
            owned = {cid: ms for cid, ms in full.meters_by_channel.items() if cid in channels}
            snapshot = InventorySnapshot(channels, owned)
        retiring = [self.workers.pop(cid) for cid in set(self.workers) - set(snapshot.channels)]
        if self.owns is None:
            for retired in retiring:
                ctx.tasks.spawn(retired.stop(), f"retire-{retired.spec.name}")
        else:  # a channel given up: stopped before its lease is let go (never two masters on a bus)
            await asyncio.gather(*(retired.stop() for retired in retiring))
        for channel_id, spec in snapshot.channels.items():
            meters = snapshot.meters_by_channel.get(channel_id, [])
            worker = self.workers.get(channel_id)
            if worker is not None and worker.spec != spec:
                self.workers.pop(channel_id)
                await worker.stop()  # the same bus may be reopened below: never two owners at once
                worker = None
            if worker is None:
                worker = ChannelWorker(
                    spec,
                    meters,
                    ctx.port.open_channel,
                    ctx.port.make_driver,
                    ctx.health,
                    ctx.metrics,
                    ctx.port,
                    ctx.store_comm_event,
                )
                worker.start()
                self.workers[channel_id] = worker
            else:
                worker.update_meters(meters)
        self.snapshot = snapshot
        # dial-in identities now expected (in a cluster every channel's: a device may connect to any member)
        ctx.port.inventory_loaded(full.channels.values())
        meter_channel = {m.id: cid for cid, ms in snapshot.meters_by_channel.items() for m in ms}
        added = set(meter_channel) - set(self.meter_channel)
        self.meter_channel = meter_channel
        log.info("inventory loaded", extra={"channels": len(snapshot.channels), "meters": len(meter_channel)})
        return added

    def worker_of(self, meter_id: int) -> ChannelWorker:
        """The worker of the meter's channel; LookupError if the meter is not enabled."""
        channel_id = self.meter_channel.get(meter_id)
        worker = None if channel_id is None else self.workers.get(channel_id)
        if worker is None:
            raise LookupError(f"meter {meter_id} is not in the enabled inventory")
        return worker

    async def stop(self) -> None:
        """Stop every worker (each finishes its exchange in flight)."""
        await asyncio.gather(*(w.stop() for w in self.workers.values()))
