"""Campaign windows: the freeze always closed, the peak reading windows closed, the campaign's own
windows (over midnight too) open, and the next opening to the minute."""

from __future__ import annotations

from datetime import datetime

import pytest

from headend.params.windows import WindowError, is_open, next_open, parse_window

DAY = datetime(2027, 3, 1)


def at(hh: int, mm: int, day: int = 1) -> datetime:
    return DAY.replace(day=day, hour=hh, minute=mm)


def test_the_freeze_is_closed_whatever_the_windows() -> None:
    any_time = [parse_window("22:00-02:00")]
    assert [is_open(at(h, m), any_time, []) for h, m in ((23, 54), (23, 55), (0, 0), (0, 9), (0, 10))] == [
        True, False, False, False, True,
    ]  # fmt: skip
    assert not is_open(at(23, 59), [], [])


def test_peak_reading_and_campaign_windows() -> None:
    peak = [parse_window("00:10-01:00")]
    windows = [parse_window("09:00-11:30"), parse_window("23:00-01:30")]
    assert is_open(at(9, 0), windows, peak) and not is_open(at(11, 30), windows, peak)
    assert not is_open(at(0, 30), windows, peak) and is_open(at(1, 0), windows, peak)
    assert is_open(at(23, 10), windows, peak) and not is_open(at(12, 0), windows, peak)


def test_the_next_opening() -> None:
    windows = [parse_window("09:00-11:30")]
    assert next_open(at(12, 0, 30).replace(second=15), windows, []) == at(9, 0, 31)
    assert next_open(at(10, 0), windows, []) == at(10, 0)
    assert next_open(at(23, 56), [], []) == at(0, 10, 2)
    assert next_open(at(23, 56), [parse_window("23:56-23:59")], []) is None  # wholly in the freeze
    assert next_open(at(12, 0), [parse_window("23:58-00:05")], []) is None


@pytest.mark.parametrize(("text", "message"), [
    ("9:00-10:00", "window '9:00-10:00': expected HH:MM-HH:MM, e.g. 09:00-17:00"),
    ("10:00-10:00", "window '10:00-10:00': its start and end are the same"),
    ("24:00-01:00", "window '24:00-01:00': expected HH:MM-HH:MM, e.g. 09:00-17:00"),
])  # fmt: skip
def test_bad_windows_are_one_line(text: str, message: str) -> None:
    with pytest.raises(WindowError) as caught:
        parse_window(text)
    assert str(caught.value) == message
