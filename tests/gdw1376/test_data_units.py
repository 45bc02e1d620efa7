"""Data units against hand-assembled bytes (the layouts of the reference, independent of the encoder):
DA/DT sets, readings with EE, the forwarding control word, the archive record, ERC 14 layouts."""

from __future__ import annotations

import datetime as dt

import pytest

from protocols.gdw1376 import (
    ALL_POINTS,
    Address,
    ArchiveRecord,
    EncodeError,
    EnergyReading,
    EventRecords,
    ForwardRequest,
    PayloadError,
    PowerEvent,
    RawEvent,
    Timeout,
)
from protocols.gdw1376.data import codec_for
from protocols.gdw1376.fields import da_bytes, dt_bytes, fn_set, pn_set


@pytest.mark.parametrize(
    ("fn", "wire"), [(1, "0100"), (3, "0400"), (10, "0201"), (31, "4003"), (129, "0110"), (161, "0114")]
)
def test_dt_of_the_reference(fn: int, wire: str) -> None:
    assert dt_bytes((fn,)).hex() == wire and fn_set(bytes.fromhex(wire)) == (fn,)


def test_da_sets() -> None:
    assert pn_set(bytes.fromhex("0000")) == (0,) and pn_set(bytes.fromhex("FF00")) == (ALL_POINTS,)
    assert pn_set(bytes.fromhex("0201")) == (2,)
    assert pn_set(bytes.fromhex("8103")) == (17, 24)  # group 3, bits 0 and 7
    assert da_bytes((17, 24)) == bytes.fromhex("8103")
    with pytest.raises(EncodeError):
        da_bytes((8, 9))  # two groups
    with pytest.raises(PayloadError):
        pn_set(bytes.fromhex("0100"))  # group 0 with a point bit


def _decode(afn: int, up: bool, fn: int, hex_data: str) -> object:
    data = bytes.fromhex(hex_data)
    value, end = codec_for(afn, up, fn).decode(data, 0, len(data))
    assert end == len(data)
    return value


def test_f129_reading_and_no_data() -> None:
    # read at 2026-03-15 08:30, M=2: total 1234.5678, tariff 1 = 1000.0001, tariff 2 = EE
    value = _decode(0x0C, True, 129, "30081503260278563412000100001000EEEEEEEEEE")
    assert value == EnergyReading(dt.datetime(2026, 3, 15, 8, 30), 1234.5678, (1000.0001, None))
    empty = _decode(0x0C, True, 129, "EEEEEEEEEE01" + "EE" * 10)
    assert isinstance(empty, EnergyReading) and not empty.collected and empty.read_at is None


def test_non_bcd_reading_is_a_payload_error() -> None:
    with pytest.raises(PayloadError):
        _decode(0x0C, True, 129, "3008150326007A56341200")


@pytest.mark.parametrize(
    ("word", "baud", "line"),
    [("6B", 2400, "8E1"), ("CB", 9600, "8E1"), ("4F", 1200, "8O1"), ("63", 2400, "8N1")],
)
def test_forward_control_word(word: str, baud: int, line: str) -> None:
    request = _decode(0x10, False, 1, f"02{word}850A02006816")
    assert isinstance(request, ForwardRequest)
    assert (request.port, request.baud, request.line_format) == (2, baud, line)
    assert request.frame_timeout == Timeout(5, seconds=True) and request.byte_timeout_ms == 100
    assert request.content == bytes.fromhex("6816")


def test_archive_record_of_27_bytes() -> None:
    raw = (
        "0100"  # n = 1
        "0300"
        "0500"  # serial 3, Pn 5
        "62"  # baud code 3 (2400), port 2
        "1E"  # DL/T 645-2007
        "563412000000"  # address 000000123456
        "000000000000"  # password
        "04"  # 4 tariffs
        "09"  # 6 integer digits (10), 2 decimals (01)
        "000000000000"  # no collector
        "51"  # user class 5 / 1
    )
    (record,) = _decode(0x04, False, 10, raw)
    assert record == ArchiveRecord(
        serial=3, pn=5, port=2, address="000000123456", protocol=30, baud=2400, user_major=5, user_minor=1
    )
    assert codec_for(0x04, False, 10).encode((record,)).hex().upper() == raw.upper()


def test_erc14_both_layouts_and_other_events_raw() -> None:
    records = _decode(
        0x0E,
        True,
        1,
        "0300"
        "0003"  # EC1 3, EC2 0, Pm 0, Pn 3
        "0E0A"
        "3008150326"
        "4509150326"  # ERC 14, Le 10
        "0E0B"
        "01"
        "3008150326"
        "EEEEEEEEEE"  # ERC 14, Le 11 (flags), not yet powered on
        "0302"
        "ABCD",  # ERC 3, raw
    )
    assert isinstance(records, EventRecords) and (records.ec1, records.start, records.end) == (3, 0, 3)
    assert records.records == (
        PowerEvent(dt.datetime(2026, 3, 15, 8, 30), dt.datetime(2026, 3, 15, 9, 45)),
        PowerEvent(dt.datetime(2026, 3, 15, 8, 30), None, flags=1),
        RawEvent(3, bytes.fromhex("ABCD")),
    )


def test_address_forms() -> None:
    address = Address.parse("0314-25394")
    assert address.to_wire().hex().upper() == "1403326300"
    assert Address.parse("03146332") == address and address.hex_name == "03146332"
    with pytest.raises(EncodeError):
        Address.parse("0314-70000")
