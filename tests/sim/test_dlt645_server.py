"""Raw byte conversations with the simulated DL/T 645 meters over real TCP sockets and ptys."""

from __future__ import annotations

import datetime as dt

import pytest

from protocols.dlt645 import (
    assemble_read,
    build_change_baud,
    build_change_password,
    build_control,
    build_demand_reset,
    build_event_clear,
    build_freeze,
    build_multifunction_output,
    build_read,
    build_read_address,
    build_read_followup,
    build_read_profile,
    build_time_sync,
    build_write,
    build_write_address,
    decode,
)
from tests.support.sim import running_bus
from tests.support.waiting import wait_until

PW = {"password_level": 2, "password": "000000"}


@pytest.mark.parametrize("transport", ["tcp", "pty"])
async def test_reads_answer_with_the_meters_own_values(transport: str) -> None:
    async with running_bus(meters=3, transport=transport, seed=3) as (bus, client):
        meter = bus.meters[1]
        reply = await client.ask(build_read(meter.address, "00010000"))
        assert reply is not None and reply.address == meter.address and reply.di == "00010000"
        assert reply.value == pytest.approx(meter.model.registers.import_kwh, abs=0.02)
        block = await client.ask(build_read(meter.address, "0001FF00"))
        assert block.value[0] == pytest.approx(sum(block.value[1:]), abs=0.05)
        status = await client.ask(build_read(meter.address, "04000503"))
        assert status.value["relay_open"] is False
        clock = await client.ask(build_read(meter.address, "04000102"))
        local = meter.model.clock.local()
        assert abs(dt.datetime.combine(local.date(), clock.value) - local) < dt.timedelta(seconds=3)
        unknown = await client.ask(build_read(meter.address, "7F000000"))
        assert unknown.is_abnormal and unknown.error_flags == ["no_data"]
        assert await client.ask(build_read("999999999998", "00010000"), timeout=0.3) is None
        assert bus.requests[0x11] == 6


async def test_load_profile_is_read_with_followup_frames() -> None:
    async with running_bus(meters=1, seed=4) as (bus, client):
        model = bus.meters[0].model
        start = model.profile[-12].time
        first = await client.ask(build_read_profile(model.address, "06000001", 10, start))
        frames = [first]
        seq = 1
        while frames[-1].has_followup:
            frames.append(await client.ask(build_read_followup(model.address, "06000001", seq)))
            seq += 1
        assert len(frames) > 1 and frames[-1].control == 0x92
        _, records = assemble_read(frames)
        assert [r["time"] for r in records] == [start + dt.timedelta(minutes=15 * i) for i in range(10)]
        energies = [r["energy_import_kwh"] for r in records]
        assert energies == sorted(energies) and energies[-1] > energies[0]
        freeze = await client.ask(build_read(model.address, "05060101"))
        assert freeze.value == model.daily[-1].import_values
        assert len(model.daily) >= 62 and len(model.profile) == 7 * 96


async def test_profile_period_sets_the_load_profile_interval() -> None:
    async with running_bus(meters=1, seed=4, profile_period_s=60, history_days=1) as (bus, client):
        model = bus.meters[0].model
        assert len(model.profile) == 1440
        start = model.profile[-6].time
        first = await client.ask(build_read_profile(model.address, "06000001", 5, start))
        frames = [first]
        while frames[-1].has_followup:
            frames.append(await client.ask(build_read_followup(model.address, "06000001", len(frames))))
        _, records = assemble_read(frames)
        assert [r["time"] for r in records] == [start + dt.timedelta(minutes=i) for i in range(5)]


def test_profile_period_must_divide_a_day() -> None:
    from simulators.clock import TimeSource
    from simulators.meter import SimMeter

    for period in (7 * 60, 90):  # 7 minutes do not divide a day; records carry no seconds
        with pytest.raises(ValueError, match="whole minutes dividing a day"):
            SimMeter("000000000001", seed=1, source=TimeSource(), profile_period_s=period)


async def test_read_address_write_address_and_single_meter_rules() -> None:
    async with running_bus(meters=1, seed=6) as (bus, client):
        reply = await client.ask(build_read_address())
        assert reply.value == bus.meters[0].address
        ack = await client.ask(build_write_address("000000001234"))
        assert ack.function == 0x15 and ack.is_response and not ack.is_abnormal
        assert (await client.ask(build_read("000000001234", "00010000"))).address == "000000001234"
    async with running_bus(meters=3, seed=6) as (_, client):
        assert await client.ask(build_write_address("000000001234"), timeout=0.3) is None


async def test_clock_write_needs_the_password() -> None:
    spec = {"utc_offset_h": _noon_offset_hours()}  # a time-only write must not cross midnight
    async with running_bus(meters=1, seed=7, password="314159", **spec) as (bus, client):
        model = bus.meters[0].model
        target = model.clock.local().replace(microsecond=0) + dt.timedelta(hours=2)
        refused = await client.ask(
            build_write(
                model.address, "04000102", target.time(), password_level=2, password="000000", operator="7"
            )
        )
        assert refused.is_abnormal and refused.error_flags == ["password"]
        ok = await client.ask(
            build_write(
                model.address, "04000102", target.time(), password_level=2, password="314159", operator="7"
            )
        )
        assert ok.function == 0x14 and not ok.is_abnormal
        assert abs(model.clock.local() - target) < dt.timedelta(seconds=3)
        record = await client.ask(build_read(model.address, "03300401"))
        assert record.value["operator"] == "00000007"


def _noon_offset_hours() -> float:
    """A time zone that puts the meters' local time at noon now (away from the midnight window)."""
    now = dt.datetime.now(dt.UTC)
    return 12 - now.hour - now.minute / 60


async def test_broadcast_time_sync_rules() -> None:
    spec = {"clock_offsets_s": {0: 120.0, 1: 900.0}, "utc_offset_h": _noon_offset_hours()}
    async with running_bus(meters=2, seed=8, **spec) as (bus, client):
        near, far = bus.meters
        true_local = near.model.clock.local() - dt.timedelta(seconds=120)
        assert await client.ask(build_time_sync(true_local), timeout=0.3) is None
        assert abs(near.model.clock.error()) < dt.timedelta(seconds=3)
        assert far.model.clock.error() > dt.timedelta(minutes=14)  # beyond the +-5 min limit
        near.model.clock.jump(60)
        await client.send(build_time_sync(true_local))
        assert await client.frames(1, 0.3) == []
        assert near.model.clock.error() > dt.timedelta(seconds=50)  # once a day only
        assert bus.requests[0x08] == 2


async def test_remote_control_semantics() -> None:
    async with running_bus(meters=1, seed=9) as (bus, client):
        model = bus.meters[0].model
        expiry = model.clock.local() + dt.timedelta(minutes=5)

        def control(action: str, **kw: object) -> bytes:
            args = {**PW, "operator": "00000042", "expiry": expiry, **kw}
            return build_control(model.address, action, **args)  # type: ignore[arg-type]

        assert not (await client.ask(control("trip"))).is_abnormal
        status = await client.ask(build_read(model.address, "04000503"))
        assert status.value["relay_open"] and status.value["relay_command_open"]
        record = await client.ask(build_read(model.address, "1D00FF01"))
        assert record.value["operator"] == "00000042"
        await client.ask(control("close_allowed"))
        status = await client.ask(build_read(model.address, "04000503"))
        assert status.value["relay_open"] and not status.value["relay_command_open"]
        assert model.press_button()
        assert not (await client.ask(build_read(model.address, "04000503"))).value["relay_open"]
        await client.ask(control("keep_power"))
        refused = await client.ask(control("trip"))
        assert refused.is_abnormal and refused.error_flags == ["password"] and not model.relay.open
        await client.ask(control("keep_power_release"))
        expired = await client.ask(control("trip", expiry=expiry - dt.timedelta(hours=1)))
        assert expired.error_flags == ["password"]
        wrong = await client.ask(control("trip", password="999999"))
        assert wrong.error_flags == ["password"]
        await client.ask(control("trip"))
        await client.ask(control("close"))
        assert not model.relay.open
        assert (await client.ask(build_read(model.address, "1E000001"))).value == 2


async def test_open_relay_stops_consumption() -> None:
    async with running_bus(meters=1, seed=10, load_scale=3600.0) as (bus, client):
        model = bus.meters[0].model
        expiry = model.clock.local() + dt.timedelta(minutes=5)
        before = (await client.ask(build_read(model.address, "00010000"))).value

        async def grown() -> bool:  # the register shows 0.01 kWh steps
            return (await client.ask(build_read(model.address, "00010000"))).value > before

        await wait_until(grown, 10, "the energy register to advance")
        await client.ask(build_control(model.address, "trip", **PW, operator="1", expiry=expiry))
        tripped = (await client.ask(build_read(model.address, "00010000"))).value
        assert tripped > before
        power = await client.ask(build_read(model.address, "02030000"))
        assert power.value == 0
        assert (await client.ask(build_read(model.address, "00010000"))).value == tripped


async def test_password_commands_baud_freeze_and_output() -> None:
    async with running_bus(meters=1, seed=11) as (bus, client):
        address = bus.meters[0].address
        assert (await client.ask(build_change_baud(address, 9600))).value == 9600
        assert (await client.ask(build_freeze(address, "99999999"))).function == 0x16
        assert (await client.ask(build_multifunction_output(address, 1))).value == "demand_period_pulse"
        change = build_change_password(
            address, old_level=2, old_password="000000", new_level=2, new_password="777777"
        )
        changed = await client.ask(change)
        assert changed.fields["password"] == "777777"
        bad = await client.ask(build_demand_reset(address, password_level=2, password="000000", operator="1"))
        assert bad.error_flags == ["password"]
        good = await client.ask(
            build_demand_reset(address, password_level=2, password="777777", operator="1")
        )
        assert good.function == 0x19 and not good.is_abnormal
        cleared = await client.ask(
            build_event_clear(address, password_level=2, password="777777", operator="1")
        )
        assert cleared.function == 0x1B and not cleared.is_abnormal


async def test_1997_meters() -> None:
    async with running_bus(meters=1, edition=1997, seed=12) as (bus, client):
        address = bus.meters[0].address
        energy = await client.ask(build_read(address, "9010", edition=1997))
        assert energy.edition == 1997 and energy.control == 0x81 and energy.value > 0
        voltage = await client.ask(build_read(address, "B611", edition=1997))
        assert 220 <= voltage.value <= 240 and isinstance(voltage.value, int)
        found = await client.ask(build_read("999999999999", "C032", edition=1997))
        assert found.address == address and found.value == address
        unknown = await client.ask(build_read(address, "9999", edition=1997))
        assert unknown.control == 0xC1 and unknown.error_flags == ["di_error"]
        assert await client.ask(build_read(address, "00010000"), timeout=0.3) is None
        write = await client.ask(
            build_write(address, "C011", dt.time(10, 0, 0), password_level=2, password="000000", edition=1997)
        )
        assert write.control == 0x84
        assert (await client.ask(build_change_baud(address, 1200, edition=1997))).value == 1200


async def test_replies_use_per_meter_preambles() -> None:
    async with running_bus(meters=6, seed=13) as (bus, client):
        counts = set()
        for meter in bus.meters:
            client.received.clear()
            reply = await client.ask(build_read(meter.address, "00010000"))
            assert reply is not None
            counts.add(len(client.received) - len(client.received.lstrip(b"\xfe")))
        assert counts <= {0, 2, 4} and len(counts) > 1
        assert decode(build_read(bus.meters[0].address, "00010000")).is_response is False
