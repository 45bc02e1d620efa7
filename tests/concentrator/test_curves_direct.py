"""A meter's curves look the same whichever way it is reached: the same simulated load model (same
seed, address, phases) read directly over DL/T 645 (the 06 load-profile records) and behind a
concentrator (AFN 0D curves, among them the energy-quantity curves F97..F100)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from headend.drivers import make_driver
from headend.drivers.base import ProfileRecord
from headend.drivers.gdw1376 import TARIFF_QUANTITIES, ConcentratorMeterDriver
from headend.secrets import Credentials
from headend.transport import open_channel
from headend.transport.concentrator import ConcentratorLink
from headend.transport.url import parse_channel_url
from simulators import BusSpec, start_bus
from tests.concentrator.support import listening, url_of

pytestmark = pytest.mark.timeout(120)

SEED = 61
INTERVAL_ENERGY = (
    "energy_import_interval_kwh",
    "reactive_import_interval_kvarh",
    "energy_export_interval_kwh",
    "reactive_export_interval_kvarh",
)


def _by_time(records: list[ProfileRecord]) -> dict[datetime, ProfileRecord]:
    return {r.ts: r for r in records}


async def test_direct_and_concentrator_curves_of_the_same_load_model_agree() -> None:
    bus = await start_bus(BusSpec(meters=1, seed=SEED, phases=3, history_days=2))
    try:
        async with listening(meters=1, three_phase=1, seed=SEED, history_days=2) as sim:
            address = sim.pool.meters[0].address
            assert address == bus.meters[0].address  # the same meter, the same seed
            model = sim.pool.meters[0].model
            last = max(r.time for r in model.profile)  # the meter's local time
            # six hours that always hold one local midnight (the concentrator's freeze), whatever
            # the time of day the test runs at: 20:00 to 02:00 around the last midnight recorded (two days
            # of history hold it)
            midnight = (last - timedelta(hours=3)).replace(hour=0, minute=0, second=0, microsecond=0)
            end = (midnight + timedelta(hours=2) - model.clock.utc_offset).replace(tzinfo=UTC)
            start = end - timedelta(hours=6)
            channel = open_channel(bus.url + "?retries=1&turnaround_ms=300")
            link = ConcentratorLink(parse_channel_url(url_of(sim)))
            try:
                direct = make_driver("dlt645-2007", channel, address, None, Credentials(2, "000000"))
                behind = ConcentratorMeterDriver(link, address, pn=1, port=sim.pool.port_of[address])
                direct_records = _by_time(await direct.read_profile(start, end))
                curve_records = _by_time(await behind.read_profile(start, end))
            finally:
                await channel.close()
                await link.close()
    finally:
        await bus.stop()
    # the concentrator was asked for every energy-quantity curve
    assert {f"curve_F{fn}" for fn in (97, 98, 99, 100)} <= set(sim.counts)
    times = sorted(set(direct_records) & set(curve_records))
    assert len(times) == 25  # six hours of 15-minute points, both ends included
    # the concentrator's midnight freeze (F161) adds the tariff registers at the local midnight, and
    # only there; the direct meter's load profile has none
    freezes = [ts for ts in times if curve_records[ts].source == "daily_freeze"]
    assert [(ts + model.clock.utc_offset).replace(tzinfo=None) for ts in freezes] == [midnight], freezes
    compared = 0
    for ts in times:
        direct_values, curve_values = direct_records[ts].values, curve_records[ts].values
        # the energy of each interval, from the 06 records' registers and from F97..F100
        for name in INTERVAL_ENERGY:
            assert name in direct_values and name in curve_values, (ts, name)
            assert direct_values[name] == pytest.approx(curve_values[name], abs=1e-4), (ts, name)
        # every curve both sides have, with the same value (the neutral current only through F95)
        shared = set(direct_values) & set(curve_values)
        freeze_only = set(TARIFF_QUANTITIES) if ts in freezes else set()
        assert set(curve_values) - shared <= {"current_n_a"} | freeze_only, ts
        assert freeze_only <= set(curve_values), ts
        for name in shared:
            assert direct_values[name] == pytest.approx(curve_values[name], abs=1e-3), (ts, name)
        compared += len(shared)
    # the load model consumes: interval energy is not all zero, and it is the register's increase
    imported = [direct_records[ts].values["energy_import_interval_kwh"] for ts in times]
    assert sum(imported) > 0
    first, final = direct_records[times[0]].values, direct_records[times[-1]].values
    assert sum(imported[1:]) == pytest.approx(
        final["energy_import_kwh"] - first["energy_import_kwh"], abs=1e-3
    )
    assert compared >= 25 * 20
