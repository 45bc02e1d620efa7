"""The typed seams between transport, drivers and engine, exercised on real channels and models."""

from __future__ import annotations

import pytest

from headend.drivers import (
    Capabilities,
    Dlt645Driver,
    ModbusDriver,
    NotSupported,
    capabilities_for,
    make_driver,
)
from headend.transport import Channel, FrameBus, ModbusChannel, open_channel
from headend.transport.modbus import RtuLink


async def test_a_raw_channel_is_a_frame_bus_and_a_modbus_gateway_is_not() -> None:
    raw, gateway = open_channel("tcp://127.0.0.1:1"), open_channel("modbus-tcp://127.0.0.1:1")
    assert isinstance(raw, Channel) and isinstance(raw, FrameBus)
    assert isinstance(gateway, ModbusChannel) and not isinstance(gateway, FrameBus)
    await raw.close()
    await gateway.close()


async def test_dlt645_on_a_modbus_gateway_is_a_one_line_error() -> None:
    gateway = open_channel("modbus-tcp://127.0.0.1:1")
    try:
        with pytest.raises(NotSupported, match="dlt645-2007 needs a raw serial://") as info:
            make_driver("dlt645-2007", gateway, "000000000001")
        assert "\n" not in str(info.value)
    finally:
        await gateway.close()


async def test_modbus_driver_talks_rtu_through_the_adapter_on_a_raw_channel() -> None:
    raw = open_channel("tcp://127.0.0.1:1")
    driver = make_driver("modbus", raw, 3, "hiking_dds238_2_znsr")
    assert isinstance(driver, ModbusDriver) and isinstance(driver.link, RtuLink)
    await raw.close()


@pytest.mark.parametrize(
    ("protocol", "model", "expected"),
    [
        ("dlt645-2007", None, Capabilities(memory=True, events=True, relay=True, clock=True)),
        ("dlt645-1997", None, Capabilities(clock=True)),
        ("modbus", "hiking_dds238_2_znsr", Capabilities(relay=True)),
        ("modbus", "eastron_sdm630", Capabilities()),
    ],
)
async def test_capabilities_come_from_the_driver_not_the_protocol_name(
    protocol: str, model: str | None, expected: Capabilities
) -> None:
    assert capabilities_for(protocol, model) == expected
    channel = open_channel("tcp://127.0.0.1:1")
    driver = make_driver(protocol, channel, 1 if protocol == "modbus" else "000000000001", model)
    assert driver.capabilities == expected
    assert isinstance(driver, ModbusDriver if protocol == "modbus" else Dlt645Driver)
    await channel.close()


def test_an_unknown_protocol_has_no_capabilities() -> None:
    with pytest.raises(NotSupported, match="no driver for protocol 'iec62056'"):
        capabilities_for("iec62056")
