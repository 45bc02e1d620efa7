"""Pure parts of the dial-in front end: ``dtu://`` URLs, registration formats and the heartbeat rule."""

from __future__ import annotations

import struct

import pytest

from headend.inventory import ChannelEntry
from headend.transport import ChannelUrlError, check_protocol, parse_channel_url
from headend.transport.identify import (
    DtuIdentifier,
    HeartbeatFilter,
    Identification,
    IdentifyError,
    RegistrationFormat,
    parse_pattern,
)
from protocols.dlt645 import Deframer, build_read_response
from protocols.modbus import rtu


def test_dtu_url_keeps_the_identity_as_registered_with_the_line_options() -> None:
    config = parse_channel_url("dtu://Dtu-0001?baud=1200&parity=N&retries=3")
    assert (config.scheme, config.identity, config.baud, config.parity, config.retries) == (
        "dtu", "Dtu-0001", 1200, "N", 3,
    )  # fmt: skip
    assert config.label == "dtu://Dtu-0001"
    for bad in ("dtu://", "dtu://has space", "dtu://DTU-1?speed=9"):
        with pytest.raises(ChannelUrlError):
            parse_channel_url(bad)
    entry = ChannelEntry(name="v", url="dtu://DTU-7?baud=2400")
    assert (entry.kind, entry.address) == ("dtu", "DTU-7")


def test_a_dtu_bus_carries_either_protocol_and_is_identified_by_its_registration_id() -> None:
    config = parse_channel_url("dtu://DTU-7?baud=9600&parity=N")
    for protocol in ("dlt645-2007", "dlt645-1997", "modbus"):
        check_protocol(protocol, config)  # raw frames through the DTU: DL/T 645 and Modbus RTU
    assert config.bus == parse_channel_url("dtu://DTU-7").bus != parse_channel_url("dtu://DTU-8").bus
    assert config.bus != parse_channel_url("tcp://DTU-7:1").bus


@pytest.mark.parametrize(
    ("fmt", "stream", "found"),
    [
        (RegistrationFormat(), b"DTU-0001\r\n", Identification("DTU-0001", 10)),
        (
            RegistrationFormat(encoding="hex", length=4),
            b"\x12\x34\xab\xcd\x68",
            Identification("1234ABCD", 4),
        ),
        (RegistrationFormat(delimiter=b";"), b"860123456789012;rest", Identification("860123456789012", 16)),
        (RegistrationFormat(prefix=b"REG", delimiter=b"\n"), b"\x00\xffREGabc\n", Identification("abc", 9)),
        (RegistrationFormat(prefix=b"REG", length=3), b"xxREGab", None),  # needs one more byte
    ],
)
def test_registration_formats(fmt: RegistrationFormat, stream: bytes, found: Identification | None) -> None:
    assert DtuIdentifier(fmt).identify(stream) == found


@pytest.mark.parametrize(
    "stream",
    [b"\x00\x01garbage", b"bad id", b"A" * 65, b"\r\n"],
)
def test_malformed_registrations_are_refused(stream: bytes) -> None:
    with pytest.raises(IdentifyError):
        DtuIdentifier(RegistrationFormat()).identify(stream)


def test_heartbeat_rule_removes_whole_packets_only() -> None:
    beat = HeartbeatFilter(b"HB")
    assert beat.feed(b"HB", identifying=False) == b""
    assert beat.feed(b"HBHB", identifying=False) == b""
    assert beat.feed(b"\x68HB\x16", identifying=False) == b"\x68HB\x16"  # inside data: meter data
    assert (
        beat.feed(b"HB\x68\x01", identifying=False) == b"HB\x68\x01"
    )  # glued to data: left for the deframer
    assert beat.feed(b"HBH", identifying=False) == b"HBH"
    assert beat.keepalives == 3
    assert beat.feed(b"HBHBDTU-1", identifying=True) == b"DTU-1"  # before the registration
    assert beat.keepalives == 5
    assert HeartbeatFilter(b"").feed(b"HB", identifying=False) == b"HB"  # none configured


def test_patterns() -> None:
    assert parse_pattern("hex:FE FE") == b"\xfe\xfe"
    assert parse_pattern("www.usr.cn") == b"www.usr.cn"
    for bad in ("hex:GG", "héllo"):
        with pytest.raises(ValueError):
            parse_pattern(bad)


def test_a_heartbeat_glued_before_a_reply_is_skipped_by_either_deframer() -> None:
    beat = HeartbeatFilter(b"HB")
    reply = build_read_response("000012345678", "00010000", 1234.56)
    passed = beat.feed(b"HB" + reply, identifying=False)
    assert passed == b"HB" + reply  # not whole heartbeats: the listener leaves it to the protocol
    assert Deframer().feed(passed) == [reply]
    body = bytes([7, 3, 4, 0, 1, 0, 2])
    modbus_reply = body + struct.pack("<H", rtu.crc16(body))
    assert rtu.RtuDeframer(7, 3, 2).feed(b"HB" + modbus_reply) == [modbus_reply]
