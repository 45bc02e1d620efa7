"""Simulated meter conditions: what each does to the registers and the instantaneous values, and
``headend sim dlt645 --condition`` refusing a bad one in one line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from simulators.bus import BusSpec, SimBus
from simulators.conditions import MeterCondition
from tests.support import cli


def test_a_spec_names_each_condition_and_a_bad_one_is_refused() -> None:
    assert MeterCondition.parse("") == MeterCondition()
    assert MeterCondition.parse("stopped+lost_phase=c") == MeterCondition(stopped=True, lost_phase="c")
    assert MeterCondition.parse("imbalance=0.25").imbalance == 0.25
    assert MeterCondition.parse("bypass=0.3").bypass == 0.3
    for bad in ("stoped", "lost_phase=d", "imbalance=1.5", "reversed=1", "bypass=1"):
        with pytest.raises(ValueError, match="unknown meter condition"):
            MeterCondition.parse(bad)


def test_each_condition_changes_what_the_meter_measures() -> None:
    conditions = {1: "stopped", 2: "reversed", 3: "lost_phase=b", 4: "imbalance=0.5", 5: "bypass=0.4"}
    bus = SimBus(BusSpec(meters=6, seed=77, phases=3, conditions=conditions))
    start = {
        i: (m.model.registers.import_kwh, m.model.registers.export_kwh) for i, m in enumerate(bus.meters)
    }
    later = datetime.now(UTC) + timedelta(hours=1)
    for meter in bus.meters:
        meter.model.advance(later)
    moved = {
        i: (m.model.registers.import_kwh - start[i][0], m.model.registers.export_kwh - start[i][1])
        for i, m in enumerate(bus.meters)
    }
    assert moved[0][0] > 0 and moved[1] == (0.0, 0.0)  # stopped: nothing moves
    assert moved[2][0] == 0.0 and moved[2][1] > 0  # reversed: the load counts as export
    twin = SimBus(BusSpec(meters=6, seed=77, phases=3)).meters[5].model  # the same meter, no bypass
    twin_start = twin.registers.import_kwh
    twin.advance(later)
    drawn = twin.registers.import_kwh - twin_start
    assert moved[5][0] == pytest.approx(0.6 * drawn, rel=0.01)  # a bypass: 40 % drawn around the meter
    stopped = bus.meters[1].model.instantaneous(later)
    assert min(stopped[f"current_{p}_a"] for p in "abc") > 0  # ... while current flows
    lost = bus.meters[3].model.instantaneous(later)
    assert lost["voltage_b_v"] < 1 and lost["current_b_a"] == 0 and lost["voltage_a_v"] > 200
    uneven = bus.meters[4].model.instantaneous(later)
    assert uneven["current_a_a"] == pytest.approx(3 * uneven["current_c_a"], rel=0.05)


async def test_the_sim_command_refuses_a_bad_condition_in_one_line() -> None:
    code, _out, err = await cli.headend_async("sim", "dlt645", "--meters", "2", "--condition", "2:stopped")
    assert (
        code == 2 and err.strip() == "error: --condition 2:stopped: INDEX:SPEC with INDEX a meter from 0 to 1"
    )
    code, _out, err = await cli.headend_async("sim", "dlt645", "--condition", "0:broken")
    assert code == 2 and err.count("\n") == 1 and "unknown meter condition 'broken'" in err
