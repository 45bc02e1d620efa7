"""Register-map model: encode/decode round trips, batching, bundled models."""

from __future__ import annotations

import pytest
from pymodbus.client import AsyncModbusTcpClient

from protocols.modbus import Point, PointError, load_modbus_model, plan_reads
from protocols.models import UnknownModel

BUNDLED = ["eastron_sdm630", "eastron_sdm120", "chint_dtsu666", "hiking_dds238_2_znsr"]


def test_float32_matches_pymodbus_word_orders() -> None:
    big = Point("voltage_a_v", 4, 0, "float32", "big")
    little = Point("voltage_a_v", 4, 0, "float32", "little")
    dt = AsyncModbusTcpClient.DATATYPE.FLOAT32
    assert big.encode(230.5) == AsyncModbusTcpClient.convert_to_registers(230.5, dt)
    assert little.encode(230.5) == AsyncModbusTcpClient.convert_to_registers(230.5, dt, word_order="little")
    assert little.decode(little.encode(230.5)) == 230.5


def test_scaled_integer_round_trip_and_overflow() -> None:
    energy = Point("energy_import_kwh", 3, 10, "uint32", "big", 0.01)
    assert energy.encode(1234.56) == [0x0001, 0xE240]
    assert energy.decode([0x0001, 0xE240]) == pytest.approx(1234.56)
    power = Point("power_kw", 3, 14, "int16", scale=0.001)
    assert power.decode(power.encode(-1.5)) == pytest.approx(-1.5)
    with pytest.raises(PointError, match="does not fit int16"):
        power.encode(40.0)
    with pytest.raises(PointError, match="needs 2 registers"):
        energy.decode([1])
    with pytest.raises(PointError, match="unknown type"):
        Point("x", 3, 0, "float16")


def test_plan_reads_batches_adjacent_and_splits_on_gap_function_and_size() -> None:
    points = [Point(f"p{a}", 4, a) for a in (0, 2, 4, 20)] + [Point("h", 3, 2)]
    blocks = plan_reads(points, max_gap=4, max_count=125)
    assert [(b.function, b.address, b.count) for b in blocks] == [(3, 2, 2), (4, 0, 6), (4, 20, 2)]
    assert [(b.address, b.count) for b in plan_reads(points[:3], max_gap=0, max_count=4)] == [(0, 4), (4, 2)]
    block = plan_reads(points[:2], max_gap=0)[0]
    values = block.decode(points[0].encode(1.0) + points[1].encode(2.0))
    assert values == {"p0": 1.0, "p2": 2.0}


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_models_load_with_canonical_names(name: str) -> None:
    model = load_modbus_model(name)
    for quantity in (
        "energy_import_kwh",
        "energy_export_kwh",
        "voltage_a_v",
        "current_a_a",
        "power_kw",
        "pf",
    ):
        assert quantity in model.points
    assert model.points["power_kw"].unit == "kW"
    covered = {p.name for block in model.reads() for p in block.points}
    assert covered == set(model.points)


def test_hiking_relay_strategy_is_fc16_with_readback() -> None:
    relay = load_modbus_model("hiking_dds238_2_znsr").relay
    assert relay is not None
    assert (relay.write_function, relay.address, relay.readback) == (16, 0x1A, 0x1A)
    assert relay.is_closed(1) is True and relay.is_closed(0) is False and relay.is_closed(7) is None
    assert load_modbus_model("eastron_sdm630").relay is None


def test_unknown_model_error_lists_known() -> None:
    with pytest.raises(UnknownModel, match="eastron_sdm120"):
        load_modbus_model("nope")
