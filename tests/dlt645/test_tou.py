"""Time-of-use parameter items: exact byte layouts, limits and write frames (docs/protocols.md)."""

from __future__ import annotations

import datetime as dt

import pytest

from protocols.dlt645 import EncodeError, PayloadError, build_read_response, build_write, decode, lookup
from protocols.dlt645.link import unscramble
from protocols.dlt645.tou import daily_table_di, holiday_di, season_table_di

SEASONS = [{"start": "01-01", "table": 1}, {"start": "06-15", "table": 2}]
SLOTS = [{"start": "00:00", "tariff": 4}, {"start": "08:30", "tariff": 2}, {"start": "22:00", "tariff": 3}]


def _data(frame: bytes) -> bytes:
    """The unscrambled data field of a frame without preamble."""
    length = frame[9]
    return unscramble(frame[10 : 10 + length])


def test_season_table_entries_are_mmddnn_least_significant_byte_first() -> None:
    frame = build_read_response("000000000001", "04010000", SEASONS)
    assert _data(frame) == bytes.fromhex("00000104010101021506")
    assert decode(frame).value == SEASONS


def test_daily_table_entries_are_hhmmnn_least_significant_byte_first() -> None:
    frame = build_read_response("000000000001", "04020003", SLOTS)
    assert _data(frame) == bytes.fromhex("03000204040000023008030022")
    assert decode(frame).value == SLOTS


def test_holiday_is_yymmddnn_and_counts_switch_times_rest_days() -> None:
    holiday = {"date": dt.date(2026, 10, 1), "table": 3}
    assert lookup("04030001").encode(holiday) == bytes.fromhex("03011026")
    assert lookup("040300FE").decode(bytes.fromhex("03011026")) == holiday
    assert lookup("04000205").encode(12) == bytes.fromhex("1200")  # NNNN: 2 bytes
    assert lookup("04000201").encode(4) == b"\x04"
    assert lookup("04000106").encode(dt.datetime(2027, 1, 1, 0, 0)) == bytes.fromhex("0000010127")
    assert lookup("04000107").decode(bytes(5)) is None  # no switch pending
    rest = lookup("04000801").decode(b"\x3e")  # Monday..Friday working, weekend rest
    assert rest["saturday"] is False and rest["monday"] is True


def test_di_helpers() -> None:
    assert season_table_di(2) == "04020000"
    assert daily_table_di(1, 8) == "04010008"
    assert holiday_di(254) == "040300FE"
    for bad in (lambda: season_table_di(3), lambda: daily_table_di(1, 9), lambda: holiday_di(0)):
        with pytest.raises(EncodeError):
            bad()


@pytest.mark.parametrize(
    ("di", "value", "message"),
    [
        ("04010000", [{"start": "01-01", "table": 1}] * 15, "1..14 entries"),
        ("04010000", [], "1..14 entries"),
        ("04010000", [{"start": "13-01", "table": 1}], "not a date"),
        ("04010000", [{"start": "01-01", "table": 9}], "daily table 9"),
        ("04010001", [{"start": "24:00", "tariff": 1}], "not a time of day"),
        ("04010001", [{"start": "08:00", "tariff": 64}], "tariff 64"),
        ("04010001", [{"start": "08:00"}], "no 'tariff'"),
        ("04030001", {"date": "2026-10-01", "table": 1}, "not a date"),
    ],
)
def test_values_that_do_not_fit_are_refused_precisely(di: str, value: object, message: str) -> None:
    with pytest.raises(EncodeError, match=message):
        lookup(di).encode(value)


def test_bad_bytes_are_payload_errors() -> None:
    with pytest.raises(PayloadError, match="not a date"):
        lookup("04010000").decode(bytes.fromhex("010113"))  # month 13
    with pytest.raises(PayloadError, match="not a time of day"):
        lookup("04010001").decode(bytes.fromhex("010025"))  # 25:00


def test_write_of_a_daily_table_carries_password_operator_and_entries() -> None:
    frame = build_write(
        "000000000042", "04020001", SLOTS, password_level=4, password="123456", operator="00000007"
    )
    data = _data(frame[4:])  # 4 x FE preamble
    assert data == bytes.fromhex("010002040456341207000000040000023008030022")
    decoded = decode(frame)
    assert decoded.di == "04020001" and decoded.value == SLOTS
    assert decoded.fields["password_level"] == 4 and decoded.fields["password"] == "123456"
