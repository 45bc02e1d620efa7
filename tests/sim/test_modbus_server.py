"""Modbus simulator: pymodbus clients against every bundled model over TCP, RTU-over-TCP and a pty."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from protocols.modbus import load_modbus_model
from tests.support import cli
from tests.support.sim import modbus_client, running_modbus_bus
from tests.support.waiting import wait_until

MODELS = ["eastron_sdm630", "eastron_sdm120", "chint_dtsu666", "hiking_dds238_2_znsr"]


async def read_all(client: AsyncModbusTcpClient, model_name: str, unit: int) -> dict[str, float]:
    values: dict[str, float] = {}
    for block in load_modbus_model(model_name).reads():
        read = client.read_holding_registers if block.function == 3 else client.read_input_registers
        reply = await read(block.address, count=block.count, device_id=unit)
        assert not reply.isError(), reply
        values.update(block.decode(reply.registers))
    return values


@pytest.mark.parametrize("model", MODELS)
async def test_each_model_reads_values_consistent_with_the_meter(model: str) -> None:
    async with running_modbus_bus(model=model, transport="modbus-tcp", meters=2) as (bus, client):
        values = await read_all(client, model, 2)
        meter = bus.meter(2).model
        assert values["energy_import_kwh"] == pytest.approx(meter.registers.import_kwh, abs=0.05)
        assert values["energy_import_kwh"] > 0
        assert 220 < values["voltage_a_v"] < 240
        assert 49.9 <= values["frequency_hz"] <= 50.1
        assert 0 < values["power_kw"] < 10
        other = await read_all(client, model, 1)
        assert other["energy_import_kwh"] != values["energy_import_kwh"]
        assert bus.requests[3] + bus.requests[4] == 2 * len(load_modbus_model(model).reads())


async def test_hiking_relay_fc16_write_and_read_back_fc06_refused() -> None:
    async with running_modbus_bus(model="hiking_dds238_2_znsr", transport="rtu-over-tcp", meters=3) as (
        bus,
        client,
    ):
        meter = bus.meter(3).model
        reply = await client.write_registers(0x1A, [0], device_id=3)
        assert not reply.isError()
        assert meter.relay.open and not bus.meter(2).model.relay.open
        assert (await client.read_holding_registers(0x1A, count=1, device_id=3)).registers == [0]
        refused = await client.write_register(0x1A, 1, device_id=3)
        assert refused.isError() and refused.exception_code == 1
        assert meter.relay.open
        await client.write_registers(0x1A, [1], device_id=3)
        assert not meter.relay.open
        assert (await client.read_holding_registers(0x1A, count=1, device_id=3)).registers == [1]
        bad = await client.write_registers(0x0A, [5, 5], device_id=3)
        assert bad.isError() and bad.exception_code == 2


async def test_meters_without_relay_refuse_writes() -> None:
    async with running_modbus_bus(model="eastron_sdm630", transport="modbus-tcp") as (_bus, client):
        reply = await client.write_registers(0, [1], device_id=1)
        assert reply.isError() and reply.exception_code == 2


async def test_absent_and_offline_units_are_silent() -> None:
    async with running_modbus_bus(model="eastron_sdm120", transport="rtu-over-tcp", meters=2) as (
        bus,
        client,
    ):
        assert bus.packets_received == 0
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0, count=2, device_id=9)
        assert bus.packets_received == 1 and sum(bus.requests.values()) == 0
        bus.meter(1).model.offline = True
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0, count=2, device_id=1)
        assert not (await client.read_input_registers(0, count=2, device_id=2)).isError()


async def test_energy_grows_with_load_scale() -> None:
    async with running_modbus_bus(model="eastron_sdm120", transport="modbus-tcp", load_scale=5000.0) as (
        _bus,
        client,
    ):
        first = (await read_all(client, "eastron_sdm120", 1))["energy_import_kwh"]

        async def grown() -> bool:
            return (await read_all(client, "eastron_sdm120", 1))["energy_import_kwh"] > first

        await wait_until(grown, 10, "the energy register to advance")


async def test_pty_rtu_conversation() -> None:
    async with running_modbus_bus(model="chint_dtsu666", transport="pty", meters=2) as (bus, client):
        assert bus.url.startswith("serial:///dev/pts/")
        values = await read_all(client, "chint_dtsu666", 2)
        assert 220 < values["voltage_c_v"] < 240


async def test_corrupt_and_no_reply_faults_follow_the_seeded_plan_and_are_counted() -> None:
    async with running_modbus_bus(
        model="eastron_sdm120", transport="rtu-over-tcp", faults="no_reply=0.3,corrupt=0.3", seed=4
    ) as (bus, client):
        planned = bus.faults.plan.faults_in(0, 12)  # known before the first request
        run = []
        for _ in range(12):
            try:
                reply = await client.read_input_registers(0, count=2, device_id=1)
                run.append("ok" if not reply.isError() else "error")
            except ModbusIOException:
                run.append("lost")
    assert set(planned.values()) == {"no_reply", "corrupt"}  # the seed exercises both
    assert run == ["lost" if index in planned else "ok" for index in range(12)]  # a bad CRC is discarded
    assert bus.fault_counts == Counter(planned.values())


async def test_late_fault_delays_replies_past_the_client_timeout() -> None:
    spec = {"model": "eastron_sdm120", "transport": "modbus-tcp", "faults": "late=1,late_delay=0.8"}
    async with running_modbus_bus(**spec) as (bus, client):
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0, count=2, device_id=1)
        assert loop.time() - started < 0.8
        assert bus.fault_counts["late"] == 1


async def test_headend_sim_modbus_command_serves_and_stops_on_sigterm() -> None:
    process = await cli.spawn(
        "sim", "modbus", "--model", "hiking_dds238_2_znsr", "--meters", "2", "--tcp", "127.0.0.1:0", "--json"
    )
    try:
        assert process.stdout is not None
        info = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        assert info["meters"] == [1, 2] and info["url"].startswith("modbus-tcp://127.0.0.1:")
        host, port = info["url"].split("://")[1].rsplit(":", 1)
        async with AsyncModbusTcpClient(host, port=int(port), timeout=0.5, retries=0) as client:
            assert not (await client.write_registers(0x1A, [0], device_id=2)).isError()
            assert (await client.read_holding_registers(0x1A, count=1, device_id=2)).registers == [0]
            assert (await client.read_holding_registers(0x1A, count=1, device_id=1)).registers == [1]
    finally:
        assert (await cli.stop(process, 15)).returncode == 0


async def test_headend_sim_modbus_unknown_model_is_a_precise_error() -> None:
    code, _out, err = await cli.headend_async("sim", "modbus", "--model", "nope", "--tcp", "127.0.0.1:0")
    assert code == 2 and "unknown meter model 'nope'" in err


async def test_keep_power_refuses_a_trip_with_device_failure() -> None:
    async with running_modbus_bus(model="hiking_dds238_2_znsr", transport="modbus-tcp") as (bus, client):
        bus.meter(1).model.relay.keep_power = True
        reply = await client.write_registers(0x1A, [0], device_id=1)
        assert reply.isError() and reply.exception_code == 4
        assert not bus.meter(1).model.relay.open


async def test_headend_sim_fleet_runs_modbus_buses(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        '[[bus]]\nprotocol = "modbus"\nmodel = "eastron_sdm630"\ntransport = "modbus-tcp"\nmeters = 2\n\n'
        '[[bus]]\nprotocol = "modbus"\nmodel = "chint_dtsu666"\ntransport = "rtu-over-tcp"\nmeters = 1\n'
    )
    process = await cli.spawn("sim", "fleet", str(fleet), "--json")
    try:
        assert process.stdout is not None
        buses = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))["buses"]
        assert [b["model"] for b in buses] == ["eastron_sdm630", "chint_dtsu666"]
        for bus in buses:
            client = modbus_client(bus["url"])
            await client.connect()
            values = await read_all(client, bus["model"], bus["meters"][-1])
            client.close()
            assert 220 < values["voltage_b_v"] < 240
    finally:
        assert (await cli.stop(process, 15)).returncode == 0


async def test_three_phase_values_are_consistent() -> None:
    async with running_modbus_bus(model="eastron_sdm630", transport="modbus-tcp", seed=3) as (_bus, client):
        values = await read_all(client, "eastron_sdm630", 1)
        phases = values["power_a_kw"] + values["power_b_kw"] + values["power_c_kw"]
        assert values["power_kw"] == pytest.approx(phases, rel=1e-3)
        for label in "abc":
            apparent = values[f"voltage_{label}_v"] * values[f"current_{label}_a"] / 1000
            assert values[f"power_{label}_kw"] == pytest.approx(apparent * values["pf"], rel=0.01)


async def test_headend_sim_fleet_modbus_bus_with_its_defaults(tmp_path: Path) -> None:
    """A ``[[bus]]`` with only ``protocol = "modbus"`` runs: Modbus TCP, the SDM120 model."""
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[[bus]]\nprotocol = "modbus"\nmeters = 2\n\n[[bus]]\nmeters = 1\n')
    process = await cli.spawn("sim", "fleet", str(fleet), "--json")
    try:
        assert process.stdout is not None
        modbus, dlt645 = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))["buses"]
        assert (modbus["model"], modbus["meters"]) == ("eastron_sdm120", [1, 2])
        assert modbus["url"].startswith("modbus-tcp://") and dlt645["url"].startswith("tcp://")
        client = modbus_client(modbus["url"])
        await client.connect()
        values = await read_all(client, "eastron_sdm120", 2)
        client.close()
        assert 220 < values["voltage_a_v"] < 240
    finally:
        assert (await cli.stop(process)).returncode == 0
