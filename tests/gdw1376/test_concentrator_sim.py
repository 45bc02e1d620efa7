"""The concentrator simulator through a real TCP socket, driven by a small master written with the codec."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from protocols import dlt645
from protocols.gdw1376 import (
    ALL_DENIED,
    Afn,
    ArchiveQuery,
    ArchiveRecord,
    CurveRequest,
    DailyReading,
    EnergyReading,
    EventRequest,
    ForwardReply,
    ForwardRequest,
    Frame,
    PowerEvent,
    Timeout,
    unit,
)
from simulators.concentrator import ConcentratorSpec, SimConcentrator
from tests.gdw1376.master import MasterConnection, MasterStation

pytestmark = pytest.mark.timeout(60)


@asynccontextmanager
async def running(
    auto_confirm: bool = True, **spec: Any
) -> AsyncIterator[tuple[SimConcentrator, MasterStation, MasterConnection]]:
    master = await MasterStation(auto_confirm).start()
    options: dict[str, Any] = {
        "meters": 8,
        "ports": 2,
        "latency_ms": 20,
        "redial_s": 0.1,
        "login_timeout_s": 1.0,
    }
    options.update(spec)
    sim = SimConcentrator(ConcentratorSpec(port=master.port, **options))
    await sim.start()
    try:
        connection = await master.next_connection()
        if auto_confirm:
            await connection.wait_link_tests(1)
            await asyncio.wait_for(sim.logged_in.wait(), 5)
        yield sim, master, connection
    finally:
        await sim.stop()
        await master.stop()


def readings(frames: list[Frame]) -> dict[int, Any]:
    return {pn: value for frame in frames for pn, _fn, value in frame.items()}


async def test_login_is_confirmed_and_heartbeats_follow() -> None:
    async with running(heartbeat_s=0.2) as (sim, _master, connection):
        tests = await connection.wait_link_tests(3)
        assert [t.value(1 if i == 0 else 3) for i, t in enumerate(tests[:3])] == [None, None, None]
        assert tests[0].address.key == "0314-25394" and tests[0].seq.con
        assert sim.counts["logins"] == 1 and sim.counts["heartbeats"] >= 2


async def test_unconfirmed_login_is_retried_then_accepted() -> None:
    async with running(auto_confirm=False, login_timeout_s=1.5) as (sim, _master, connection):
        tests = await connection.wait_link_tests(2)
        assert tests[0].seq.seq != tests[1].seq.seq
        await connection.confirm(tests[1])
        await asyncio.wait_for(sim.logged_in.wait(), 5)
        assert sim.counts["logins"] == 2


async def test_failed_logins_drop_the_connection_and_redial() -> None:
    async with running(auto_confirm=False, login_timeout_s=0.1, login_attempts=2) as (sim, master, first):
        await asyncio.wait_for(first.closed.wait(), 5)
        second = await master.next_connection()
        await second.wait_link_tests(1)
        assert sim.counts["login_failures"] >= 1 and sim.counts["connections"] >= 2


async def test_current_energy_of_several_points_matches_the_meters() -> None:
    async with running() as (sim, _master, connection):
        frames = await connection.ask(Afn.CLASS1_DATA, [unit((1, 2, 3), 129), unit((4, 5), 129)])
        got = readings(frames)
        assert sorted(got) == [1, 2, 3, 4, 5]
        for pn, reading in got.items():
            assert isinstance(reading, EnergyReading) and reading.collected
            model = sim.pool.meters[pn - 1].model
            assert abs(reading.total - model.registers.import_kwh) < 0.05
            assert abs(sum(reading.tariffs) - reading.total) < 0.05
            assert len(reading.tariffs) == 4


async def test_a_large_answer_comes_as_a_multi_frame_reply() -> None:
    async with running(meters=32, max_frame_bytes=300) as (_sim, _master, connection):
        groups = [unit(tuple(range(g * 8 + 1, g * 8 + 9)), 129) for g in range(4)]
        frames = await connection.ask(Afn.CLASS1_DATA, groups)
        assert len(frames) > 1
        assert frames[0].seq.fir and not frames[0].seq.fin and frames[-1].seq.fin
        assert sorted(readings(frames)) == list(range(1, 33))


async def test_daily_freeze_of_past_days_is_deterministic_from_the_meter_model() -> None:
    async with running() as (sim, _master, connection):
        today = sim.clock.local().date()
        days = [today - dt.timedelta(days=n) for n in (1, 3, 40)]
        answers = []
        for day in days:
            frames = await connection.ask(Afn.CLASS2_DATA, [unit((1, 2), 161, day, day)])
            answers.append(readings(frames))
        for day, got in zip(days, answers, strict=True):
            reading = got[2]
            assert isinstance(reading, DailyReading) and reading.day == day
            freeze = next(
                f for f in sim.pool.meters[1].model.daily if f.time.date() == day + dt.timedelta(days=1)
            )
            assert reading.reading.total == pytest.approx(freeze.import_values[0])
        other = SimConcentrator(ConcentratorSpec(meters=8))
        assert other.pool.daily(2, days[1]) == answers[1][2]


async def test_energy_curve_points_come_from_the_load_profile() -> None:
    async with running() as (sim, _master, connection):
        model = sim.pool.meters[0].model
        start = model.profile[-8].time
        frames = await connection.ask(Afn.CLASS2_DATA, [unit(1, 101, CurveRequest(start, 1, 4))])
        curve = frames[0].value(101, 1)
        expected = [r.import_kwh for r in list(model.profile)[-8:-4]]
        assert curve.start == start and list(curve.values) == pytest.approx(expected)


async def test_forwarded_dlt645_read_takes_line_time_and_returns_the_meter_reply() -> None:
    async with running(turnaround_s=0.05, baud=1200) as (sim, _master, connection):
        meter = sim.pool.meters[1]  # on port 2
        request = dlt645.build_read(meter.address, "00010000")
        forward = ForwardRequest(port=2, content=request, baud=1200, frame_timeout=Timeout(3))
        began = time.monotonic()
        frames = await connection.ask(Afn.FORWARD, [unit(0, 1, forward)])
        elapsed = time.monotonic() - began
        reply = frames[0].value(1)
        assert isinstance(reply, ForwardReply) and reply.port == 2
        inner = dlt645.decode(reply.content)
        assert inner.address == meter.address and inner.di == "00010000"
        assert inner.value == pytest.approx(meter.model.registers.import_kwh, abs=0.05)
        line_time = (len(request) + len(reply.content)) * 11 / 1200
        assert elapsed >= line_time + 0.05


async def test_forward_to_a_meter_not_on_the_port_times_out_with_empty_content() -> None:
    async with running() as (sim, _master, connection):
        request = dlt645.build_read(sim.pool.meters[1].address, "00010000")  # meter 1 is on port 2
        forward = ForwardRequest(port=1, content=request, frame_timeout=Timeout(30, seconds=False))
        frames = await connection.ask(Afn.FORWARD, [unit(0, 1, forward)])
        assert frames[0].value(1) == ForwardReply(1, b"")
        assert sim.counts["forward_timeouts"] == 1


async def test_forward_at_a_baud_the_meters_do_not_use_gets_no_answer() -> None:
    async with running() as (sim, _master, connection):  # meters at 2400 8E1
        meter = sim.pool.meters[0]
        request = dlt645.build_read(meter.address, "00010000")
        forward = ForwardRequest(port=1, content=request, baud=9600, frame_timeout=Timeout(20, seconds=False))
        frames = await connection.ask(Afn.FORWARD, [unit(0, 1, forward)])
        assert frames[0].value(1) == ForwardReply(1, b"")
        assert sim.counts["forward_line_mismatch"] == 1
        ok = ForwardRequest(port=1, content=request, baud=2400)
        frames = await connection.ask(Afn.FORWARD, [unit(0, 1, ok)])
        assert dlt645.decode(frames[0].value(1).content).address == meter.address


async def test_forwarded_trip_opens_the_meter_relay() -> None:
    async with running() as (sim, _master, connection):
        meter = sim.pool.meters[0]
        trip = dlt645.build_control(
            meter.address,
            "trip",
            password_level=2,
            password="000000",
            operator="1",
            expiry=dt.datetime(2099, 1, 1),
        )
        frames = await connection.ask(Afn.FORWARD, [unit(0, 1, ForwardRequest(port=1, content=trip))])
        assert not dlt645.decode(frames[0].value(1).content).is_abnormal
        assert meter.model.relay.open


async def test_clock_read_and_set() -> None:
    async with running() as (sim, _master, connection):
        frames = await connection.ask(Afn.CLASS1_DATA, [unit(0, 2)])
        clock = frames[0].value(2)
        assert abs((clock - sim.clock.local()).total_seconds()) < 5
        wanted = (sim.clock.local() + dt.timedelta(hours=1)).replace(microsecond=0)
        (ok,) = await connection.ask(Afn.CONTROL, [unit(0, 31, wanted)])
        assert (ok.afn, ok.value(1)) == (Afn.CONFIRM, None)
        frames = await connection.ask(Afn.CLASS1_DATA, [unit(0, 2)])
        assert abs((frames[0].value(2) - wanted).total_seconds()) < 5


async def test_archive_query_and_push() -> None:
    async with running(faults="absent=#5") as (_sim, _master, connection):
        frames = await connection.ask(Afn.QUERY_PARAMETERS, [unit(0, 10, ArchiveQuery((1, 6, 2)))])
        records = frames[0].value(10)
        assert [r.serial for r in records] == [1, 2]  # serial 6 (meter #5) is not in the archive
        added = ArchiveRecord(serial=6, pn=6, port=2, address="000000001234")
        (ok,) = await connection.ask(Afn.SET_PARAMETERS, [unit(0, 10, (added,))])
        assert ok.afn == Afn.CONFIRM and ok.value(1) is None
        frames = await connection.ask(Afn.QUERY_PARAMETERS, [unit(0, 10, ArchiveQuery((6,)))])
        assert frames[0].value(10) == (added,)
        frames = await connection.ask(Afn.CLASS1_DATA, [unit(6, 129)])
        assert frames[0].value(129, 6).collected is False  # archived, but no such meter on the line


async def test_absent_point_is_denied_and_ee_meter_has_no_data() -> None:
    async with running(faults="absent=#5,ee=#2") as (_sim, _master, connection):
        (denied,) = await connection.ask(Afn.CLASS1_DATA, [unit(6, 129)])
        assert (denied.afn, next(denied.items())[1]) == (Afn.CONFIRM, ALL_DENIED)
        frames = await connection.ask(Afn.CLASS1_DATA, [unit((3, 4), 129)])
        got = readings(frames)
        assert got[3].total is None and all(t is None for t in got[3].tariffs)
        assert got[4].collected


async def test_lost_reply_fault() -> None:
    async with running(faults="lost=1") as (sim, _master, connection):
        await connection.send(Afn.CLASS1_DATA, [unit(0, 2)])
        with pytest.raises(TimeoutError):
            await connection.answer(timeout=0.5)
        assert sim.faults.counts["lost"] == 1


async def test_late_reply_fault_arrives_after_the_delay() -> None:
    async with running(faults="late=1,late_delay=0.6") as (_sim, _master, connection):
        began = time.monotonic()
        await connection.send(Afn.CLASS1_DATA, [unit(0, 2)])
        with pytest.raises(TimeoutError):
            await connection.answer(timeout=0.3)
        (late,) = await connection.answer(timeout=5)
        assert late.afn == Afn.CLASS1_DATA and time.monotonic() - began >= 0.6


async def test_dropped_connection_is_redialled_with_a_new_login() -> None:
    async with running(faults="drop=1.0") as (sim, master, first):
        await asyncio.wait_for(first.closed.wait(), 5)
        second = await master.next_connection()
        await second.wait_link_tests(1)
        assert second.link_tests[0].value(1) is None
        assert sim.faults.counts["drop"] == 1


async def test_relogin_on_the_open_connection() -> None:
    async with running(faults="relogin=1.0", heartbeat_s=60) as (sim, _master, connection):
        tests = await connection.wait_link_tests(2)
        assert [t.units[0].fns for t in tests[:2]] == [(1,), (1,)]
        assert sim.faults.counts["relogin"] == 1 and not connection.closed.is_set()


async def test_power_cut_raises_erc14_with_acd_until_the_events_are_read() -> None:
    async with running(faults="power_cut=1.0+0.3") as (_sim, master, first):
        await asyncio.wait_for(first.closed.wait(), 5)
        second = await master.next_connection()
        await second.wait_link_tests(1)
        (answer,) = await second.ask(Afn.CLASS1_DATA, [unit(0, 2)])
        assert answer.control.acd and answer.ec == (1, 0)
        (events,) = await second.ask(Afn.CLASS3_DATA, [unit(0, 1, EventRequest(0, 1))])
        records = events.value(1)
        (event,) = records.records
        assert isinstance(event, PowerEvent) and event.off is not None and event.on >= event.off
        (after,) = await second.ask(Afn.CLASS1_DATA, [unit(0, 2)])
        assert not after.control.acd and after.ec is None
