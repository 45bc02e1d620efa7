"""Corruptions the DL/T 645 checksum cannot see: a seeded simulator moves value between two bytes of
a reply's data field (the byte sum holds), and the driver must not believe what it reads. The same
300-corruption experiment measures how many wrong values still get through (docs/protocols.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from headend.drivers import Credentials, make_driver
from headend.drivers.dlt645 import Dlt645Driver
from headend.drivers.plausibility import RegisterGuard
from headend.transport import open_channel
from simulators import BusSpec, SimBus, start_bus

ENERGY = [
    "energy_import_kwh",
    "energy_import_t1_kwh",
    "energy_import_t2_kwh",
    "energy_import_t3_kwh",
    "energy_import_t4_kwh",
]
TARIFFS = [0.0, 1742.31, 2112.09, 1650.27, 1467.64]  # total 6972.31, the register of the field report
TRUTH = dict(zip(ENERGY, [round(sum(TARIFFS), 2), *TARIFFS[1:]], strict=True))


@asynccontextmanager
async def frozen_meter(seed: int, faults: str = "") -> AsyncIterator[tuple[SimBus, Dlt645Driver]]:
    """A meter whose registers hold TARIFFS and do not advance, and its driver over TCP."""
    bus = await start_bus(BusSpec(meters=1, seed=seed, faults=faults, load_scale=0.0, turnaround_s=0.0))
    channel = open_channel(bus.url + "?baud=115200&retries=0&turnaround_ms=60&gap_ms=2")
    bus.meters[0].model.registers.import_tariffs = list(TARIFFS)
    driver = make_driver("dlt645-2007", channel, bus.meters[0].address, None, Credentials(2, "000000"))
    assert isinstance(driver, Dlt645Driver)
    try:
        yield bus, driver
    finally:
        await channel.close()
        await bus.stop()


@dataclass
class Outcome:
    reads: int = 0
    answered: int = 0  # reads that returned values (what the engine stores)
    wrong: int = 0  # returned values that differ from the meter's registers
    discarded: int = 0  # replies read twice and not believed


async def corruption_experiment(corruptions: int, seed: int) -> Outcome:
    """Read the energy block (one request: total and four tariffs) every 15 minutes of the guard's
    clock until the simulator has shifted ``corruptions`` replies, half of all it sends."""
    outcome = Outcome()
    async with frozen_meter(seed, "shift=0.5") as (bus, driver):
        now = [0.0]
        driver.guard = RegisterGuard.for_protocol("dlt645-2007", clock=lambda: now[0])
        while bus.fault_counts["shift"] < corruptions:
            outcome.reads += 1
            now[0] += 900.0  # scheduled reads: the VEE bound lets a register advance 21.7 kWh
            try:
                values = await driver.read(ENERGY)
            except Exception:  # a timeout (the reply's DI was hit) or a non-BCD digit: nothing stored
                continue
            outcome.answered += bool(values)
            outcome.wrong += sum(1 for q, v in values.items() if round(v, 2) != TRUTH[q])
        outcome.discarded = driver.discards
    return outcome


@pytest.mark.timeout(240)
async def test_300_value_moving_corruptions_store_no_wrong_value(caplog: pytest.LogCaptureFixture) -> None:
    """Without these checks the experiment returned 56 wrong values (183 reads answered) under the
    previous fault schedule of this seed."""
    outcome = await corruption_experiment(300, seed=645)
    assert outcome == Outcome(reads=288, answered=151, wrong=0, discarded=outcome.discarded)
    said = [r.getMessage() for r in caplog.records if "reply not believed, read twice" in r.getMessage()]
    assert outcome.discarded > 0 and len(said) == outcome.discarded


async def test_a_register_that_really_went_down_is_believed_once_it_says_so_twice() -> None:
    """A replaced or reset meter reads lower than its last value: read twice, the same both times,
    it is stored (VEE then holds the register for an operator), not discarded for ever."""
    async with frozen_meter(646) as (bus, driver):
        assert await driver.read(ENERGY) == TRUTH
        bus.meters[0].model.registers.import_tariffs = [0.0, 1.0, 2.0, 3.0, 4.0]
        frames = driver.channel.stats.frames_in
        values = await driver.read(ENERGY)
        assert values == dict(zip(ENERGY, [10.0, 1.0, 2.0, 3.0, 4.0], strict=True))
        assert driver.discarded == {} and driver.channel.stats.frames_in == frames + 2  # read twice
        assert await driver.read(ENERGY) == values and driver.channel.stats.frames_in == frames + 3
