"""The simulated DL/T 645-2007 meter keeps two time-of-use sets and the switch times: every item is
read and written (wrong password: the error word), and after its clock passes the switch time the
meter runs the other set and puts energy into the register the new schedule names."""

from __future__ import annotations

import datetime as dt

from protocols.dlt645 import Frame, build_read, build_write
from protocols.dlt645.tou import daily_table_di, season_table_di
from simulators.dlt645_server import Dlt645Meter
from simulators.tou import TOU_BY_HOUR
from tests.support.sim import RawClient, running_bus

PASSWORD = "314159"


async def _ask(client: RawClient, request: bytes) -> Frame:
    reply = await client.ask(request)
    assert reply is not None
    return reply


async def _write(client: RawClient, address: str, di: str, value: object, password: str = PASSWORD) -> Frame:
    return await _ask(
        client, build_write(address, di, value, password_level=2, password=password, operator="42")
    )


async def _registers(client: RawClient, address: str) -> list[float]:
    """Forward active energy t1..t4."""
    reply = await _ask(client, build_read(address, "0001FF00"))
    return list(reply.value[1:5])


async def test_items_read_back_and_a_wrong_password_changes_nothing() -> None:
    async with running_bus(meters=1, seed=31, password=PASSWORD) as (bus, client):
        address = bus.meters[0].address
        factory = (await _ask(client, build_read(address, daily_table_di(1, 1)))).value
        assert factory[:3] == [
            {"start": "00:00", "tariff": 4},
            {"start": "07:00", "tariff": 3},
            {"start": "08:00", "tariff": 2},
        ]
        assert (await _ask(client, build_read(address, "04000203"))).value == len(factory)
        table = [{"start": "00:00", "tariff": 3}, {"start": "09:30", "tariff": 1}]
        refused = await _write(client, address, daily_table_di(2, 4), table, password="000000")
        assert refused.is_abnormal and refused.error_flags == ["password"]
        assert (await _ask(client, build_read(address, daily_table_di(2, 4)))).value == factory
        writes = {
            daily_table_di(2, 4): table,
            season_table_di(2): [{"start": "01-01", "table": 1}, {"start": "07-01", "table": 4}],
            "04000201": 2,
            "04000202": 4,
            "04000205": 1,
            "04030001": {"date": dt.date(2027, 1, 1), "table": 4},
            "04000801": 0x3E,
            "04000802": 4,
            "04000106": dt.datetime(2030, 1, 1, 0, 0),
        }
        for di, value in writes.items():
            ack = await _write(client, address, di, value)
            assert not ack.is_abnormal, (di, ack.error_flags)
        for di, value in writes.items():
            read = (await _ask(client, build_read(address, di))).value
            assert (read["raw"] if di == "04000801" else read) == value, di
        too_many = await _write(client, address, "04000201", 15)
        assert too_many.is_abnormal and too_many.error_flags == ["year_zones"]
        assert bus.meters[0].model.event_counts["programming"] == len(writes)


def _unused_tariff(meter: Dlt645Meter, hours: int) -> int:
    """A tariff the factory schedule does not use in the meter's next ``hours`` hours."""
    now = meter.model.clock.local()
    used = {TOU_BY_HOUR[(now + dt.timedelta(hours=h)).hour] for h in range(hours + 1)}
    return min({1, 2, 3, 4} - used)


async def test_the_meter_follows_the_standby_set_after_the_switch_time() -> None:
    async with running_bus(meters=1, seed=32, password=PASSWORD) as (bus, client):
        meter = bus.meters[0]
        address = meter.address
        new = _unused_tariff(meter, 2)
        switch = meter.model.clock.local().replace(second=0) + dt.timedelta(minutes=45)
        for di, value in (
            (daily_table_di(2, 1), [{"start": "00:00", "tariff": new}]),
            (season_table_di(2), [{"start": "01-01", "table": 1}]),
            ("04000106", switch),
            ("04000107", switch),
        ):
            assert not (await _write(client, address, di, value)).is_abnormal, di
        status = (await _ask(client, build_read(address, "04000503"))).value
        assert (status["time_slot_table_2"], status["time_zone_table_2"]) == (False, False)

        before = await _registers(client, address)
        bus.source.advance(30 * 60)  # half an hour, still before the switch
        middle = await _registers(client, address)
        assert middle[new - 1] == before[new - 1] and sum(middle) > sum(before)

        bus.source.advance(75 * 60)  # past the switch, one more hour under the new schedule
        after = await _registers(client, address)
        assert after[new - 1] > middle[new - 1]
        status = (await _ask(client, build_read(address, "04000503"))).value
        assert (status["time_slot_table_2"], status["time_zone_table_2"]) == (True, True)
        assert (await _ask(client, build_read(address, "04000107"))).value is None  # done, cleared
        # from the switch on, every kWh went to the new tariff: the others moved only before it
        grown = [a - m for a, m in zip(after, middle, strict=True)]
        others = sum(g for i, g in enumerate(grown) if i != new - 1)
        assert others < grown[new - 1]
        later = await _registers(client, address)
        bus.source.advance(60 * 60)
        last = await _registers(client, address)
        assert [
            round(x - y, 2) for i, (x, y) in enumerate(zip(last, later, strict=True)) if i != new - 1
        ] == [0, 0, 0]
        assert last[new - 1] > later[new - 1]
