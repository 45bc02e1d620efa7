"""Typed records from decoded frames: the relay status word and event records the driver acts on."""

from __future__ import annotations

from datetime import datetime

import pytest

from protocols.dlt645 import PayloadError, build_read_response, decode
from protocols.dlt645.records import (
    RELAY_STATUS_DI,
    PowerDownRecord,
    RelayStatus,
    power_down_record,
    relay_status,
    switch_record,
)

ADDRESS = "000000000161"


def _decoded(di: str, value: object) -> object:
    return decode(build_read_response(ADDRESS, di, value)).value


@pytest.mark.parametrize("raw", [0, 1 << 4, 1 << 4 | 1 << 6, 1 << 7 | 1 << 12, 0xFFFF])
def test_status_word_3_becomes_a_relay_status(raw: int) -> None:
    status = relay_status(_decoded(RELAY_STATUS_DI, raw))
    assert status == RelayStatus(
        relay_open=bool(raw & 1 << 4),
        command_open=bool(raw & 1 << 6),
        keep_power=bool(raw & 1 << 12),
        pre_trip_alarm=bool(raw & 1 << 7),
        raw=raw,
    )


def test_power_down_records_open_and_closed() -> None:
    start, end = datetime(2026, 11, 20, 8, 0, 5), datetime(2026, 11, 20, 9, 30, 0)
    assert power_down_record(_decoded("03110001", {"start": start, "end": end})) == PowerDownRecord(
        start, end
    )
    assert power_down_record(_decoded("03110002", {"start": start, "end": None})).end is None


def test_switch_record_keeps_time_apart_from_details() -> None:
    when = datetime(2026, 11, 21, 10, 15, 0)
    value = {
        "time": when,
        "operator": "00001234",
        "forward_active_kwh": 12.5,
        "reverse_active_kwh": 0.0,
        "q1_reactive_kvarh": 1.0,
        "q2_reactive_kvarh": 0.0,
        "q3_reactive_kvarh": 0.0,
        "q4_reactive_kvarh": 0.5,
    }
    record = switch_record(_decoded("1D00FF01", value))
    assert record.time == when
    assert record.details["operator"] == "00001234" and record.details["forward_active_kwh"] == 12.5
    assert "time" not in record.details


@pytest.mark.parametrize(
    ("parse", "value", "message"),
    [
        (relay_status, 17, "expected a record"),
        (relay_status, {"raw": 16, "relay_open": True}, "relay_command_open missing"),
        (power_down_record, {"start": None, "end": None}, "start missing or not a time"),
        (switch_record, {"operator": "1"}, "time missing"),
    ],
)
def test_a_value_of_the_wrong_shape_is_a_payload_error(parse, value: object, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        parse(value)
