"""The Modbus driver through pymodbus channels against the Modbus simulators over real TCP."""

from __future__ import annotations

import datetime as dt

import pytest

from headend.drivers import MeterTimeout, NotSupported, make_driver
from headend.transport import ModbusChannel, open_channel
from protocols.modbus.rtu import RtuDeframer, build_request, crc16, parse_reply
from simulators import BusSpec, start_bus

MODELS = ["eastron_sdm630", "eastron_sdm120", "chint_dtsu666", "hiking_dds238_2_znsr"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("transport", ["modbus-tcp", "rtu-over-tcp"])
async def test_read_every_bundled_model(model: str, transport: str) -> None:
    async with await start_bus(
        BusSpec(protocol="modbus", model=model, transport=transport, meters=2, seed=80)
    ) as bus:
        channel = open_channel(bus.url + "?retries=0&turnaround_ms=500")
        driver = make_driver("modbus", channel, 2, model)
        try:
            values = await driver.read(
                ["energy_import_kwh", "voltage_a_v", "power_kw", "frequency_hz", "bogus"]
            )
            meter = bus.meters[1].model
            assert values["energy_import_kwh"] == pytest.approx(
                meter.registers.import_kwh, rel=1e-3, abs=0.02
            )
            assert 220 < values["voltage_a_v"] < 240 and 49.5 < values["frequency_hz"] < 50.5
            # set to 0.1 V by the simulator: read back as that (a float32 is not 228.3000030517578)
            assert repr(values["voltage_a_v"]) == repr(round(values["voltage_a_v"], 1))
            assert driver.unsupported == {"bogus": "not in the meter model"}
            assert channel.stats.frames_in <= 4  # adjacent registers are batched into few requests
            with pytest.raises(NotSupported):
                await driver.read_profile(dt.datetime.now(dt.UTC), dt.datetime.now(dt.UTC))
        finally:
            await channel.close()


async def test_hiking_relay_is_switched_with_fc16_and_read_back() -> None:
    spec = BusSpec(protocol="modbus", model="hiking_dds238_2_znsr", transport="modbus-tcp", meters=1, seed=81)
    async with await start_bus(spec) as bus:
        channel = open_channel(bus.url)
        driver = make_driver("modbus", channel, 1, "hiking_dds238_2_znsr")
        try:
            off = await driver.switch("off", operator="ops1", poll_s=0.1)
            assert off.status == "confirmed" and off.state.open and bus.meters[0].model.relay.open
            assert off.evidence["function"] == 16
            assert (await driver.read(["relay"]))["relay"] == 0.0
            on = await driver.switch("on", operator="ops1", poll_s=0.1)
            assert on.status == "confirmed" and not bus.meters[0].model.relay.open
            assert (await driver.switch("close_allowed", operator="ops1")).status == "failed"
            broadcast = await make_driver("modbus", channel, 0, "hiking_dds238_2_znsr").switch(
                "off", operator="1"
            )
            assert broadcast.status == "refused" and "Modbus broadcast" in broadcast.reason
            assert not bus.meters[0].model.relay.open
        finally:
            await channel.close()


async def test_absent_unit_times_out_and_meter_without_relay_fails_cleanly() -> None:
    async with await start_bus(
        BusSpec(protocol="modbus", model="eastron_sdm120", transport="modbus-tcp", meters=1, seed=82)
    ) as bus:
        channel = open_channel(bus.url + "?retries=1&turnaround_ms=200")
        try:
            absent = make_driver("modbus", channel, 9, "eastron_sdm120")
            with pytest.raises(MeterTimeout, match="timeout after 2 tries"):
                await absent.read(["energy_import_kwh"])
            present = make_driver("modbus", channel, 1, "eastron_sdm120")
            assert (await present.read(["energy_import_kwh"]))["energy_import_kwh"] > 0
            result = await present.switch("off", operator="ops1")
            assert result.status == "failed" and "has no relay" in result.reason
        finally:
            await channel.close()


@pytest.mark.parametrize("transport", ["pty", "rtu-over-tcp"])
async def test_rtu_on_a_raw_channel_shared_with_dlt645(transport: str) -> None:
    """RTU framed by headend on a serial port / transparent serial server (the DL/T 645 channel type)."""
    spec = BusSpec(protocol="modbus", model="hiking_dds238_2_znsr", transport=transport, meters=2, seed=83)
    async with await start_bus(spec) as bus:
        url = bus.url.replace("rtu-over-tcp://", "tcp://")  # a pty URL carries its line settings
        channel = open_channel(url)
        assert not isinstance(channel, ModbusChannel)
        driver = make_driver("modbus", channel, 2, "hiking_dds238_2_znsr")
        try:
            values = await driver.read(["energy_import_kwh", "voltage_a_v"])
            assert values["energy_import_kwh"] == pytest.approx(
                bus.meters[1].model.registers.import_kwh, abs=0.02
            )
            off = await driver.switch("off", operator="ops1", poll_s=0.1)
            assert off.status == "confirmed" and bus.meters[1].model.relay.open
            absent = make_driver("modbus", channel, 7, "hiking_dds238_2_znsr")
            with pytest.raises(MeterTimeout):
                await absent.read(["energy_import_kwh"])
        finally:
            await channel.close()


def test_rtu_request_matches_the_wire_capture() -> None:
    assert build_request(5, 4, 0, 4).hex() == "050400000004f04d"  # pymodbus capture in the reference notes
    damaged = bytes.fromhex("050408436600003fc0000000ff")  # wrong CRC: counted, never returned
    framer = RtuDeframer(5, 4, 4)
    assert framer.feed(damaged) == [] and framer.checksum_errors == 1
    good = bytes.fromhex("050408436600003fc00000")
    good += crc16(good).to_bytes(2, "little")
    assert RtuDeframer(5, 4, 4).feed(b"\x00" + good) == [good]
    assert parse_reply(good) == [0x4366, 0x0000, 0x3FC0, 0x0000]
