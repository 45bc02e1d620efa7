"""The on-disk spool: round trip, torn tails, corruption, size bound, single owner."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from headend.store.records import CommEventRecord, CycleRecord, MeterEventsRecord
from headend.store.spool import Spool, SpoolError, SpoolFullError
from headend.store.writer import Reading

T0 = datetime(2026, 5, 4, 12, 0, 0, 123456, tzinfo=UTC)


def batch(n: int, size: int = 10) -> list[Reading]:
    return [Reading(m, "power_kw", T0 + timedelta(minutes=15 * n), m + n / 3) for m in range(1, size + 1)]


def test_round_trip_preserves_every_field(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    readings = [
        Reading(
            1,
            "energy_import_kwh",
            datetime(2026, 5, 4, 8, 15, tzinfo=timezone(timedelta(hours=8))),
            0.1 + 0.2,
        ),
        Reading(2, "relay", T0, 1, "actual", "poll"),
        Reading(3, "voltage_a_v", T0, None, "missing", "gap_scan"),
    ]
    spool.append(readings)
    spool.append(batch(1))
    spool.close()
    reopened = Spool(tmp_path)
    reopened.open()
    [segment] = reopened.segments()
    (first, second), damage = reopened.load(segment)
    assert damage is None
    assert first == readings and second == batch(1)
    assert first[0].ts.utcoffset() == timedelta(0)
    assert reopened.size_bytes == segment.stat().st_size > 0


def test_records_and_readings_come_back_in_the_order_they_were_spooled(tmp_path: Path) -> None:
    cycle = CycleRecord(3, T0, 40, 39, 117, T0, None, 0.42)
    clock = CommEventRecord("clock_corrected", 7, 3, T0, '{"drift_s": 31.5}')
    events = MeterEventsRecord(
        7, (("power_down", 7, 3, T0, T0 + timedelta(minutes=2), "{}"), ("relay_trip", 7, 3, T0, None, "{}"))
    )
    entries = [batch(0), cycle, clock, batch(1), events]
    spool = Spool(tmp_path)
    spool.open()
    for entry in entries:
        spool.append(entry)
    spool.close()
    reopened = Spool(tmp_path)
    reopened.open()
    [segment] = reopened.segments()
    assert reopened.load(segment) == (entries, None)


def test_torn_tail_record_is_cut_on_open(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    spool.append(batch(0))
    spool.append(batch(1))
    spool.close()
    [segment] = spool.segments()
    intact = segment.stat().st_size
    with segment.open("ab") as f:  # a crash in the middle of the third append
        f.write(b"HS\x00\x10\x00\x00garbage")
    reopened = Spool(tmp_path)
    reopened.open()
    assert segment.stat().st_size == intact
    assert reopened.load(segment) == ([batch(0), batch(1)], None)


def test_damage_inside_a_segment_keeps_the_intact_prefix(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    spool.append(batch(0))
    second_record = spool.size_bytes
    spool.append(batch(1))
    spool.append(batch(2))
    spool.close()
    [segment] = spool.segments()
    data = bytearray(segment.read_bytes())
    data[second_record + 20] ^= 0xFF  # flip a byte in the second payload
    segment.write_bytes(bytes(data))
    batches, damage = Spool(tmp_path).load(segment)
    assert batches == [batch(0)]
    assert damage is not None and f"damaged record at byte {second_record} of {len(data)}" in damage


def test_size_bound_refuses_without_writing(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1_500)
    spool.open()
    spool.append(batch(0))
    used = spool.size_bytes
    with pytest.raises(SpoolFullError, match="full"):
        for n in range(1, 10):
            spool.append(batch(n))
    assert spool.size_bytes <= 1_500
    assert sum(p.stat().st_size for p in spool.segments()) == spool.size_bytes >= used


def test_segments_rotate_and_remove_frees_space(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1_000)
    spool.open()
    for n in range(6):
        spool.append(batch(n))
    segments = spool.segments()
    assert len(segments) >= 3
    spool.remove(segments[0])
    assert spool.size_bytes == sum(p.stat().st_size for p in spool.segments())
    moved = spool.reject(segments[1])
    assert moved.parent.name == "rejected" and moved.exists()


def test_second_owner_is_refused(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    first.open()
    with pytest.raises(SpoolError, match="in use by another headend process"):
        Spool(tmp_path).open()
    first.close()
    second = Spool(tmp_path)
    second.open()
    second.close()
