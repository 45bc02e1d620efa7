"""Line behaviour of simulated buses: faults of every kind, echo, line timing, and the CLI."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections import Counter

import pytest

from protocols.dlt645 import ChecksumError, build_read, decode
from simulators.endpoints import bits_per_char
from simulators.faults import FaultPlan, FaultSpec, FaultSpecError
from tests.support import cli
from tests.support.sim import RawClient, running_bus
from tests.support.waiting import wait_until

READ = "00010000"


async def test_no_reply_fault_is_counted_and_silent() -> None:
    async with running_bus(meters=1, faults="no_reply=1", seed=20) as (bus, client):
        assert await client.ask(build_read(bus.meters[0].address, READ), timeout=0.3) is None
        assert bus.fault_counts["no_reply"] == 1 and bus.requests[0x11] == 1


async def test_late_reply_arrives_after_the_configured_delay() -> None:
    async with running_bus(meters=1, faults="late=1,late_delay=0.6", seed=21) as (bus, client):
        request = build_read(bus.meters[0].address, READ)
        assert await client.ask(request, timeout=0.3) is None
        late = await client.frames(1, timeout=1.0)
        assert len(late) == 1 and decode(late[0]).di == READ
        assert bus.fault_counts["late"] == 1


async def test_corrupted_checksum_reaches_the_client_as_a_checksum_error() -> None:
    async with running_bus(meters=1, faults="corrupt=1", seed=22) as (bus, client):
        await client.send(build_read(bus.meters[0].address, READ))
        assert await client.frames(1, timeout=0.4) == []
        assert client.deframer.checksum_errors == 1
        with pytest.raises(ChecksumError):
            decode(bytes(client.received).lstrip(b"\xfe"))


async def test_garbage_before_a_frame_is_skipped_by_the_deframer() -> None:
    async with running_bus(meters=1, faults="garbage=1", seed=23) as (bus, client):
        reply = await client.ask(build_read(bus.meters[0].address, READ))
        assert reply is not None and reply.di == READ
        assert client.deframer.noise_bytes > 0 and bus.fault_counts["garbage"] == 1


@pytest.mark.parametrize("kind", ["garbage_inside", "truncate"])
async def test_damaged_frames_never_decode(kind: str) -> None:
    async with running_bus(meters=1, faults=f"{kind}=1", seed=24) as (bus, client):
        assert await client.ask(build_read(bus.meters[0].address, READ), timeout=0.4) is None
        assert bus.fault_counts[kind] == 1 and len(client.received) > 0


async def test_offline_period_then_answers_again() -> None:
    async with running_bus(meters=2, faults="offline=#0@0+1.5", seed=25) as (bus, client):
        dead, alive = bus.meters
        await wait_until(lambda: dead.model.offline, 5, "the offline period to start")
        assert await client.ask(build_read(dead.address, READ), timeout=0.2) is None
        assert await client.ask(build_read(alive.address, READ)) is not None
        await wait_until(lambda: not dead.model.offline, 5, "the offline period to end")
        assert await client.ask(build_read(dead.address, READ)) is not None
        assert bus.fault_counts["offline"] == 1


async def test_power_outage_leaves_a_power_down_record() -> None:
    async with running_bus(meters=1, faults="power_outage=*@0+1.5", seed=26) as (bus, client):
        model = bus.meters[0].model
        await wait_until(lambda: not model.powered, 5, "the outage to start")
        assert await client.ask(build_read(model.address, READ), timeout=0.2) is None
        await wait_until(lambda: model.powered, 5, "the power to return")
        address = model.address
        assert (await client.ask(build_read(address, "03110000"))).value == 1
        record = await client.ask(build_read(address, "03110001"))
        assert record.value["start"] <= record.value["end"]


async def test_clock_jump() -> None:
    async with running_bus(meters=1, faults="clock_jump=#0@0:+600", seed=27) as (bus, _):
        clock = bus.meters[0].model.clock
        await wait_until(lambda: clock.error() >= dt.timedelta(seconds=599), 5, "the clock jump")
        assert bus.fault_counts["clock_jump"] == 1


async def test_echo_comes_back_before_the_reply() -> None:
    async with running_bus(meters=1, echo=True, seed=28) as (bus, client):
        request = build_read(bus.meters[0].address, READ)
        await client.send(request)
        frames = await client.frames(2)
        assert frames[0] == request[4:]
        assert decode(frames[1]).di == READ


@pytest.mark.parametrize("transport", ["tcp", "pty"])
async def test_line_timing_releases_bytes_at_the_baud_rate(transport: str) -> None:
    baud = 1200
    async with running_bus(
        meters=1, transport=transport, line_timing=True, baud=baud, seed=29, turnaround_s=0.03
    ) as (bus, client):
        request = build_read(bus.meters[0].address, READ)
        start = time.perf_counter()
        reply = await client.ask(request, timeout=3)
        elapsed = time.perf_counter() - start
        assert reply is not None
        minimum = (len(request) + len(client.received)) * bits_per_char("8E1") / baud + 0.03
        assert elapsed >= minimum * 0.95


async def test_explicit_replies_get_their_faults_as_planned_before_the_first_request() -> None:
    async with running_bus(meters=1, faults="no_reply@1,corrupt@2,garbage=0.5", seed=31) as (bus, client):
        planned = bus.faults.plan.faults_in(0, 6)
        assert {1: "no_reply", 2: "corrupt"}.items() <= planned.items()
        request = build_read(bus.meters[0].address, READ)
        answered = [await client.ask(request, timeout=0.4) is not None for _ in range(6)]
        # dropped and corrupted replies never decode; noise before a frame is skipped
        assert answered == [planned.get(index) not in ("no_reply", "corrupt") for index in range(6)]
        assert "garbage" in planned.values() and bus.fault_counts == Counter(planned.values())
        assert client.deframer.checksum_errors >= 1


def test_fault_plan_is_per_reply_index_and_explicit_replies_parse_precisely() -> None:
    spec = FaultSpec.parse("no_reply=0.3,corrupt=0.3,truncate@4")
    plan = FaultPlan(spec, seed=9)
    forwards = [plan.fault_at(index) for index in range(50)]
    assert forwards == [plan.fault_at(index) for index in reversed(range(50))][::-1]  # no hidden state
    assert forwards[4] == "truncate" and {"no_reply", "corrupt", None} <= set(forwards)
    assert plan.faults_in(0, 50) == {i: kind for i, kind in enumerate(forwards) if kind}
    with pytest.raises(FaultSpecError, match="KIND@N takes one of no_reply"):
        FaultSpec.parse("offline@3")
    with pytest.raises(FaultSpecError, match="N must be a reply index"):
        FaultSpec.parse("no_reply@x")


def test_fault_spec_errors_are_precise() -> None:
    assert FaultSpec.parse("no_reply=0.5,offline=#1@10+30").schedule[0].amount == 30
    with pytest.raises(FaultSpecError, match="unknown fault 'smoke'"):
        FaultSpec.parse("smoke=1")
    with pytest.raises(FaultSpecError, match="bad value in fault item 'no_reply=2'"):
        FaultSpec.parse("no_reply=2")
    assert bits_per_char("8N1") == 10 and bits_per_char("8E1") == 11


async def test_headend_sim_command_prints_json_serves_and_stops_on_sigterm() -> None:
    process = await cli.spawn(
        "sim", "dlt645", "--meters", "2", "--tcp", "127.0.0.1:0", "--seed", "30", "--no-block-reads", "--json"
    )
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        info = json.loads(line)
        assert info["url"].startswith("tcp://127.0.0.1:") and len(info["meters"]) == 2

        class Endpoint:
            url = info["url"]

        client = await RawClient.connect(Endpoint)  # type: ignore[arg-type]
        reply = await client.ask(build_read(info["meters"][1], READ))
        assert reply is not None and reply.address == info["meters"][1]
        refused = await client.ask(build_read(info["meters"][1], "0001FF00"))  # --no-block-reads
        assert refused is not None and refused.is_abnormal
        await client.close()
    finally:
        assert (await cli.stop(process, 15)).returncode == 0
