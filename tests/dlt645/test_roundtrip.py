"""Property tests: build -> decode gives back the same values, for every DI format and function code."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from protocols.dlt645 import (
    CONTROL_ACTIONS,
    EncodeError,
    assemble_read,
    build_abnormal,
    build_change_baud,
    build_change_password,
    build_control,
    build_demand_reset,
    build_event_clear,
    build_freeze,
    build_meter_clear,
    build_multifunction_output,
    build_read,
    build_read_address,
    build_read_followup,
    build_read_profile,
    build_read_reply_frames,
    build_read_response,
    build_response,
    build_time_sync,
    build_write,
    build_write_address,
    decode,
    lookup,
)
from protocols.dlt645.formats import BITS_BY_BAUD
from protocols.dlt645.functions import ERROR_BITS_1997, ERROR_BITS_2007
from tests.dlt645.strategies import (
    ADDRESSES,
    DATETIMES,
    OPERATORS,
    PASSWORDS,
    UNICAST_ADDRESSES,
    catalogue_1997,
    catalogue_2007,
    values_for,
)

DIS_2007 = catalogue_2007()
DIS_1997 = catalogue_1997()
EDITIONS = st.sampled_from([2007, 1997])
LEVELS = st.integers(0, 9)


def test_catalogue_covers_the_reference_items() -> None:
    for di in (
        "00010000",
        "0001FF00",
        "00150000",
        "00440000",
        "01010000",
        "0201FF00",
        "02800002",
        "04000503",
        "040005FF",
        "04000401",
        "1D00FF01",
        "1E000001",
        "03110001",
        "05060001",
        "05060101",
        "06000001",
        "06040002",
        "00900200",
        "04001001",
    ):
        assert lookup(di) is not None, di
    for di in (
        "9010",
        "901F",
        "9020",
        "9110",
        "B611",
        "B613",
        "B621",
        "B623",
        "B630",
        "B633",
        "B650",
        "C010",
        "C011",
        "C032",
        "C033",
    ):
        assert lookup(di, 1997) is not None, di
    assert len(DIS_2007) > 1000 and len(DIS_1997) > 100
    assert lookup("7F7F7F7F") is None


def test_unknown_di_decodes_as_raw_bytes() -> None:
    frame = decode(build_read_response("000000000001", "7F7F7F7F", raw=b"\x01\x02\x03"))
    assert frame.di == "7F7F7F7F" and frame.value == b"\x01\x02\x03" and frame.name is None


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (bytes.fromhex("56341200AB563412"), "non-BCD digits 123456AB"),  # a damaged second item
        (bytes.fromhex("5634120078"), "a block of 4-byte items cannot hold 5 bytes"),
    ],
)
def test_a_damaged_block_is_an_error_not_a_shorter_list(raw: bytes, error: str) -> None:
    frame = decode(build_read_response("000000000001", "0001FF00", raw=raw))
    assert frame.fields["value_error"].endswith(error)
    good = decode(build_read_response("000000000001", "0001FF00", raw=raw[:4] + bytes.fromhex("78563412")))
    assert good.value == [1234.56, 123456.78]


@pytest.mark.parametrize(("edition", "dis"), [(2007, DIS_2007), (1997, DIS_1997)])
@settings(max_examples=1500, deadline=None)
@given(data=st.data())
def test_every_di_format_round_trips(edition: int, dis: list[str], data: st.DataObject) -> None:
    di = data.draw(st.sampled_from(dis))
    item = lookup(di, edition)
    assert item is not None
    value = data.draw(values_for(item.fmt))
    address = data.draw(ADDRESSES)
    try:
        wire = build_read_response(address, di, value, edition=edition)
    except EncodeError as exc:  # a value too long for one frame goes out in follow-ups (tested below)
        assert "exceeds the 255-byte length field" in str(exc)
        assume(False)
    frame = decode(wire)
    assert (frame.edition, frame.address, frame.di, frame.name) == (edition, address, di, item.name)
    assert "value_error" not in frame.fields
    assert frame.value == value


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_long_replies_split_into_followups_and_reassemble(data: st.DataObject) -> None:
    di = data.draw(st.sampled_from(["06000001", "06010001", "06040002", "0001FF00"]))
    value = data.draw(values_for(lookup(di).fmt))
    max_data = data.draw(st.integers(20, 200))
    frames = [decode(raw) for raw in build_read_reply_frames("000000000042", di, value, max_data=max_data)]
    assert all(len(f.payload) <= max_data for f in frames)
    assert [f.has_followup for f in frames] == [True] * (len(frames) - 1) + [False]
    assert [f.seq for f in frames[1:]] == list(range(1, len(frames)))
    assert assemble_read(frames) == (di, value)


@settings(max_examples=200, deadline=None)
@given(address=ADDRESSES, edition=EDITIONS, data=st.data())
def test_read_requests(address: str, edition: int, data: st.DataObject) -> None:
    di = data.draw(st.sampled_from(DIS_2007 if edition == 2007 else DIS_1997))
    frame = decode(build_read(address, di, edition))
    assert (frame.edition, frame.address, frame.di, frame.is_response) == (edition, address, di, False)
    assert frame.function == (0x11 if edition == 2007 else 0x01)
    seq = data.draw(st.integers(0, 255))
    followup = decode(build_read_followup(address, di, seq, edition))
    assert followup.di == di and followup.function == (0x12 if edition == 2007 else 0x02)
    assert followup.seq == (seq if edition == 2007 else None)


@settings(max_examples=100, deadline=None)
@given(address=ADDRESSES, count=st.integers(1, 99), start=DATETIMES.map(lambda d: d.replace(second=0)))
def test_load_profile_request_parameters(address: str, count: int, start: dt.datetime) -> None:
    frame = decode(build_read_profile(address, "06000001", count, start))
    assert frame.fields["count"] == count and frame.fields["start"] == start
    assert decode(build_read_profile(address, "06000002", count)).fields == {
        "function_name": "read",
        "count": count,
    }


def test_read_address_uses_the_wildcard() -> None:
    frame = decode(build_read_address())
    assert frame.address == "AAAAAAAAAAAA" and frame.function == 0x13 and frame.payload == b""
    reply = decode(build_response("001210174069", 0x13, bytes.fromhex("694017101200")))
    assert reply.value == "001210174069"


@settings(max_examples=200, deadline=None)
@given(address=UNICAST_ADDRESSES, level=LEVELS, password=PASSWORDS, operator=OPERATORS, when=DATETIMES)
def test_writes_carry_password_operator_and_value(
    address: str, level: int, password: str, operator: str, when: dt.datetime
) -> None:
    frame = decode(
        build_write(
            address, "04000102", when.time(), password_level=level, password=password, operator=operator
        )
    )
    assert frame.fields["password_level"] == level and frame.fields["password"] == password
    assert frame.fields["operator"] == operator and frame.value == when.time()
    old = decode(
        build_write(address, "C010", when.date(), password_level=level, password=password, edition=1997)
    )
    assert old.edition == 1997 and old.function == 0x04 and old.value == when.date()
    assert "operator" not in old.fields


NOT_ONE_METER = {
    "AAAAAAAAAAAA": "wildcard",
    "0000000000AA": "wildcard",
    "A00000000001": "wildcard",
    "999999999999": "broadcast",
    "ABCDEF": "12 decimal digits",
    "00000000000F": "not 12 decimal",
    "0000000001": "12 decimal digits",
    "0000000000001": "12 decimal digits",
    "": "12 decimal digits",
}


@pytest.mark.parametrize(("address", "why"), NOT_ONE_METER.items())
def test_every_write_builder_refuses_addresses_that_are_not_one_meter(address: str, why: str) -> None:
    auth = {"password_level": 2, "password": "000000"}
    writes = [
        lambda: build_control(address, "trip", **auth, operator="1", expiry=dt.datetime(2026, 1, 1)),
        lambda: build_write(address, "04000102", dt.time(1, 2, 3), **auth, operator="1"),
        lambda: build_write(address, "C011", dt.time(1, 2, 3), **auth, edition=1997),
        lambda: build_change_password(address, old_level=2, old_password="0", new_level=2, new_password="1"),
        lambda: build_demand_reset(address, **auth, operator="1"),
        lambda: build_meter_clear(address, **auth, operator="1"),
        lambda: build_event_clear(address, **auth, operator="1"),
        lambda: build_change_baud(address, 9600),
        lambda: build_freeze(address),
        lambda: build_multifunction_output(address, 0),
    ]
    for build in writes:
        with pytest.raises(EncodeError, match=why):
            build()
    assert decode(build_time_sync(dt.datetime(2026, 1, 1))).address == "999999999999"  # the one broadcast


def test_write_without_operator_or_unknown_di_is_refused() -> None:
    with pytest.raises(EncodeError, match="operator"):
        build_write("000000000001", "04000102", dt.time(1, 2, 3), password_level=2, password="000000")
    with pytest.raises(EncodeError, match="not in the 2007 catalogue"):
        build_write("000000000001", "7F7F7F7F", 1, password_level=2, password="000000", operator="0")


@settings(max_examples=100, deadline=None)
@given(new=ADDRESSES, edition=EDITIONS, when=DATETIMES, baud=st.sampled_from(sorted(BITS_BY_BAUD)))
def test_address_time_and_baud_commands(new: str, edition: int, when: dt.datetime, baud: int) -> None:
    write_address = decode(build_write_address(new, edition))
    assert write_address.value == new and write_address.function == (0x15 if edition == 2007 else 0x0A)
    sync = decode(build_time_sync(when))
    assert sync.address == "999999999999" and sync.value == when
    if edition == 2007 and baud == 300:
        return
    change = decode(build_change_baud("000000000001", baud, edition))
    assert change.value == baud and change.function == (0x17 if edition == 2007 else 0x0C)


@settings(max_examples=100, deadline=None)
@given(old=PASSWORDS, new=PASSWORDS, old_level=LEVELS, new_level=LEVELS, edition=EDITIONS)
def test_change_password(old: str, new: str, old_level: int, new_level: int, edition: int) -> None:
    frame = decode(
        build_change_password(
            "000000000001",
            old_level=old_level,
            old_password=old,
            new_level=new_level,
            new_password=new,
            edition=edition,
        )
    )
    assert frame.fields["old_password"] == old and frame.fields["new_password"] == new
    assert frame.fields["old_level"] == old_level and frame.fields["new_password_level"] == new_level
    if edition == 2007:
        assert frame.di == f"04000C{new_level + 1:02X}" and frame.fields["new_level"] == new_level


@settings(max_examples=100, deadline=None)
@given(level=LEVELS, password=PASSWORDS, operator=OPERATORS)
def test_password_commands(level: int, password: str, operator: str) -> None:
    auth = {"password_level": level, "password": password, "operator": operator}
    for builder, function in ((build_demand_reset, 0x19), (build_meter_clear, 0x1A)):
        frame = decode(builder("000000000001", **auth))
        assert frame.function == function and {k: frame.fields[k] for k in auth} == auth
    clear = decode(build_event_clear("000000000001", **auth, event_di="1D00FF01"))
    assert clear.fields["event_di"] == "1D00FF01" and clear.fields["operator"] == operator
    old = decode(build_demand_reset("000000000001", password_level=level, password=password, edition=1997))
    assert old.function == 0x10 and old.fields["password"] == password


@settings(max_examples=200, deadline=None)
@given(
    action=st.sampled_from(sorted(CONTROL_ACTIONS)),
    level=LEVELS,
    password=PASSWORDS,
    operator=OPERATORS,
    expiry=DATETIMES,
)
def test_remote_control(action: str, level: int, password: str, operator: str, expiry: dt.datetime) -> None:
    frame = decode(
        build_control(
            "151230011061", action, password_level=level, password=password, operator=operator, expiry=expiry
        )
    )
    assert frame.function == 0x1C and frame.fields["action"] == action == frame.value
    assert frame.fields["expiry"] == expiry and frame.fields["operator"] == operator


def test_encrypted_remote_control_is_recognised() -> None:
    from protocols.dlt645 import encode_frame

    data = bytes([0x98, 0, 0, 0]) + bytes.fromhex("01000000") + bytes(range(20))
    frame = decode(encode_frame("151230011061", 0x1C, data))
    assert frame.name == "remote_control_encrypted"
    assert frame.fields["encrypted"] == "ciphertext+MAC" and len(frame.fields["ciphertext"]) == 40


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_freeze_and_multifunction_output(mode: int) -> None:
    assert decode(build_freeze("000000000001", "9999" + "1200")).value == "99991200"
    out = decode(build_multifunction_output("000000000001", mode))
    assert out.function == 0x1D and out.value in {
        "clock_second_pulse",
        "demand_period_pulse",
        "time_slot_switch_pulse",
    }
    with pytest.raises(EncodeError):
        build_freeze("000000000001", "12")


@settings(max_examples=200, deadline=None)
@given(edition=EDITIONS, data=st.data())
def test_abnormal_replies_round_trip_error_flags(edition: int, data: st.DataObject) -> None:
    names = ERROR_BITS_2007 if edition == 2007 else ERROR_BITS_1997
    flags = data.draw(st.lists(st.sampled_from(names), unique=True, min_size=1))
    function = data.draw(st.sampled_from([0x11, 0x14, 0x1C] if edition == 2007 else [0x01, 0x04]))
    frame = decode(build_abnormal("000000000001", function, flags, edition=edition))
    assert frame.is_abnormal and frame.function == function and frame.edition == edition
    assert frame.error_flags == [n for n in names if n in flags]


@pytest.mark.parametrize("function", [0x14, 0x15, 0x16, 0x19, 0x1A, 0x1B, 0x1C])
def test_empty_acknowledgements(function: int) -> None:
    frame = decode(build_response("000000000001", function))
    assert frame.is_response and not frame.is_abnormal and frame.function == function and frame.payload == b""
