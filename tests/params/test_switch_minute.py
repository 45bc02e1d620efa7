"""The meter keeps its switch times to the minute (YYMMDDhhmm): a campaign whose switch time has
seconds writes it to the minute and the read-back matches (it failed as "read back differs")."""

from __future__ import annotations

from datetime import UTC, datetime

from headend.drivers import Credentials, make_driver
from headend.params.runner import attempt
from headend.transport import open_channel
from simulators import BusSpec, start_bus

SET = {"seasons": [{"start": "01-01", "table": 1}], "daily_tables": [[{"start": "00:00", "tariff": 2}]]}


async def test_a_switch_time_with_seconds_is_written_to_the_minute_and_verified() -> None:
    bus = await start_bus(BusSpec(meters=1, seed=2541))
    channel = open_channel(bus.url)
    try:
        driver = make_driver("dlt645-2007", channel, bus.meters[0].address, None, Credentials(2, "000000"))
        outcome = await attempt(driver, SET, datetime(2027, 1, 1, 3, 4, 35, 120_000, tzinfo=UTC))
        assert (outcome.state, outcome.reason) == ("verified", None)
        assert bus.meters[0].model.tou.switch["04000107"] == datetime(2027, 1, 1, 11, 4)  # meter time, +08:00
    finally:
        await channel.close()
        await bus.stop()
