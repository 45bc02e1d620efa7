"""A channel worker against a simulated DL/T 645 bus over real TCP: priorities, job time limits, metrics."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from headend.config import HealthConfig, TimeoutConfig
from headend.engine.health import HealthBook
from headend.engine.jobs import Job, Priority
from headend.engine.model import ChannelSpec, MeterSpec
from headend.engine.ports import DriverPort
from headend.engine.worker import ChannelWorker
from headend.metrics import EngineMetrics
from headend.requests.duty import Turns
from simulators import start_bus
from simulators.bus import BusSpec


async def worker_on_bus(seed: int, timeout_s: float = 1.0) -> tuple[ChannelWorker, object, EngineMetrics]:
    bus = await start_bus(BusSpec(meters=3, seed=seed))
    spec = ChannelSpec(1, "bus-w", bus.url + "?gap_ms=0")
    meters = [
        MeterSpec(i + 1, 1, "dlt645-2007", m.address, None, "dlt645-generic", datetime.now(UTC))
        for i, m in enumerate(bus.meters)
    ]
    health = HealthBook(TimeoutConfig(initial=timeout_s, minimum=0.2, maximum=timeout_s), HealthConfig())
    port, metrics = DriverPort(), EngineMetrics()
    return ChannelWorker(spec, meters, port.open_channel, port.make_driver, health, metrics), bus, metrics


def sample(metrics: EngineMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_jobs_run_by_priority_then_arrival_and_are_counted() -> None:
    worker, bus, metrics = await worker_on_bus(seed=70)
    order: list[str] = []

    def job(priority: Priority, name: str, meter_id: int) -> Job:
        async def body(driver: object) -> dict[str, float]:
            order.append(name)
            return await driver.read(["energy_import_kwh"])  # type: ignore[attr-defined]

        return Job(priority, meter_id=meter_id, kind=priority.name.lower(), body=body)

    try:
        jobs = [
            job(Priority.BACKFILL, "backfill", 1),
            job(Priority.SCHEDULED, "scheduled-1", 1),
            job(Priority.ON_DEMAND, "on-demand", 2),
            job(Priority.SCHEDULED, "scheduled-2", 2),
            job(Priority.CONTROL, "control", 3),
        ]
        futures = [worker.submit(j) for j in jobs]  # all queued before the worker runs
        assert sample(metrics, "headend_queue_depth", channel="bus-w") == 5
        worker.start()
        results = await asyncio.gather(*futures)
        assert order == ["control", "on-demand", "scheduled-1", "scheduled-2", "backfill"]
        assert all(r["energy_import_kwh"] > 0 for r in results)
        assert sample(metrics, "headend_queue_depth", channel="bus-w") == 0
        assert sample(metrics, "headend_reads_total", channel="bus-w", kind="scheduled") == 2
        assert sample(metrics, "headend_job_seconds_count", kind="control") == 1
    finally:
        await worker.stop()
        await bus.stop()


async def test_a_job_over_its_time_limit_fails_with_a_timeout_and_the_bus_goes_on() -> None:
    worker, bus, metrics = await worker_on_bus(seed=71, timeout_s=0.3)
    worker.start()
    try:
        stuck = worker.submit(Job(Priority.SCHEDULED, meter_id=1, body=lambda d: asyncio.sleep(30)))
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await stuck
        assert asyncio.get_running_loop().time() - started < 2  # the 0.3 s limit, not the 30 s body
        assert sample(metrics, "headend_timeouts_total", channel="bus-w") == 1
        assert worker.health.of(1).failures == 1
        ok = worker.submit(Job(Priority.SCHEDULED, meter_id=2, body=lambda d: d.read(["energy_import_kwh"])))
        assert (await ok)["energy_import_kwh"] > 0
        assert worker.health.of(2).failures == 0
    finally:
        await worker.stop()
        await bus.stop()


async def test_stop_fails_queued_jobs_and_a_cancelled_job_is_skipped() -> None:
    worker, bus, _metrics = await worker_on_bus(seed=72)
    ran: list[int] = []

    async def body(driver: object, meter_id: int) -> dict[str, float]:
        ran.append(meter_id)
        return await driver.read(["energy_import_kwh"])  # type: ignore[attr-defined]

    try:
        first = worker.submit(Job(Priority.SCHEDULED, meter_id=1, body=lambda d: body(d, 1)))
        dropped = worker.submit(Job(Priority.SCHEDULED, meter_id=2, body=lambda d: body(d, 2)))
        dropped.cancel()
        worker.start()
        await first
        after = worker.submit(Job(Priority.SCHEDULED, meter_id=3, body=lambda d: body(d, 3)))
        await after  # queued behind the cancelled job: had that one run, it would be in ``ran`` first
        assert ran == [1, 3]
        await worker.stop()
        late = worker.submit(Job(Priority.SCHEDULED, meter_id=4, body=lambda d: body(d, 4)))
        with pytest.raises(RuntimeError, match="stopping"):
            await late
    finally:
        await bus.stop()


async def test_a_lost_reply_and_the_channels_retry_fit_in_the_job_time_limit() -> None:
    # the meter misses the first request; the channel's retry (after its ~1 s reply timeout at the
    # default 2400 baud) gets the answer, although 5 x the 0.2 s adaptive timeout is only 1 s
    bus = await start_bus(BusSpec(meters=1, seed=73, faults="offline=#0@0+0.3"))
    spec = ChannelSpec(1, "bus-r", bus.url + "?gap_ms=0")
    meter = MeterSpec(1, 1, "dlt645-2007", bus.meters[0].address, None, "dlt645-generic", datetime.now(UTC))
    health = HealthBook(TimeoutConfig(initial=0.2, minimum=0.2, maximum=2.0), HealthConfig())
    port = DriverPort()
    worker = ChannelWorker(spec, [meter], port.open_channel, port.make_driver, health, EngineMetrics())
    worker.start()
    quantities = ["energy_import_kwh", "energy_export_kwh", "voltage_a_v", "current_a_a", "power_kw"]
    try:
        job = Job(Priority.SCHEDULED, meter_id=1, body=lambda d: d.read(quantities), exchanges=5)
        values = await worker.submit(job)
        assert set(values) == set(quantities)
        assert bus.requests[0x11] == 6  # five reads, one of them sent twice
        assert health.of(1).failures == 0
    finally:
        await worker.stop()
        await bus.stop()


async def test_a_service_taking_turns_runs_one_job_between_two_scheduled_ones() -> None:
    """The meter requests' share of a bus (headend.requests.duty.Turns over ``turn_of``): a stream of
    on-demand jobs alternates with the scheduled ones waiting, and runs back to back once none waits."""
    worker, bus, _metrics = await worker_on_bus(seed=71)
    order: list[str] = []

    def job(priority: Priority, name: str) -> Job:
        async def body(driver: object) -> dict[str, float]:
            order.append(name)
            return await driver.read(["energy_import_kwh"])  # type: ignore[attr-defined]

        return Job(priority, meter_id=1 + len(name) % 3, kind="read", body=body)

    try:
        scheduled = [worker.submit(job(Priority.SCHEDULED, f"s{i}")) for i in range(3)]
        worker.start()
        turns = Turns(worker)
        for i in range(5):
            await turns()
            await worker.submit(job(Priority.ON_DEMAND, f"r{i}"))
        await asyncio.gather(*scheduled)
        assert order == ["r0", "s0", "r1", "s1", "r2", "s2", "r3", "r4"]
        assert (worker.queued(Priority.SCHEDULED), worker.ran(Priority.SCHEDULED)) == (0, 3)
    finally:
        await worker.stop()
        await bus.stop()
