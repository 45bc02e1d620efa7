"""The on-disk spool: round trip, torn tails, corruption quarantined record by record, size bound,
single owner."""

from __future__ import annotations

import struct
import zlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from headend.store.records import CommEventRecord, CycleRecord, MeterEventsRecord
from headend.store.spool import SegmentContents, Spool, SpoolError, SpoolFullError
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
    contents = reopened.load(segment)
    (first, second), damage = contents.entries, contents.damage
    assert damage == []
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
    assert reopened.load(segment).entries == entries


def test_torn_tail_record_is_set_aside_on_open(tmp_path: Path) -> None:
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
    assert reopened.load(segment) == SegmentContents([batch(0), batch(1)], [])
    [kept] = (tmp_path / "quarantine").glob("*.bad")
    assert kept.read_bytes() == b"HS\x00\x10\x00\x00garbage" and reopened.quarantined == 1
    assert "torn record" in (tmp_path / "quarantine" / "reasons.txt").read_text()


def spool_of(tmp_path: Path, count: int) -> tuple[Path, list[int]]:
    """A sealed one-segment spool of ``count`` batches and the offset of each record."""
    spool = Spool(tmp_path)
    spool.open()
    offsets = []
    for n in range(count):
        offsets.append(spool.size_bytes)
        spool.append(batch(n))
    spool.close()
    [segment] = spool.segments()
    return segment, offsets


@pytest.mark.parametrize("where", ["payload", "length", "magic"])
def test_a_corrupt_record_costs_itself_only(tmp_path: Path, where: str) -> None:
    """One flipped byte in the newest segment, anywhere in a record: the 71 acknowledged batches
    around it are kept, the damaged one is quarantined with its reason, counted, logged once."""
    segment, offsets = spool_of(tmp_path, 72)
    data = bytearray(segment.read_bytes())
    hit = offsets[40] + {"payload": 20, "length": 3, "magic": 0}[where]
    data[hit] ^= 0x5A
    segment.write_bytes(bytes(data))
    reopened = Spool(tmp_path)
    reopened.open()  # the newest segment: no longer cut after the damage
    assert segment.stat().st_size == len(data)
    contents = reopened.load(segment)
    assert contents.entries == [batch(n) for n in range(72) if n != 40]
    [kept] = (tmp_path / "quarantine").glob("*.bad")
    assert kept.read_bytes() == bytes(data[offsets[40] : offsets[41]])
    assert contents.damage == [
        f"{segment.name}: {offsets[41] - offsets[40]} bytes at {offsets[40]} quarantined (checksum mismatch)"
    ]
    assert reopened.load(segment).entries == contents.entries  # loading again quarantines nothing new
    assert reopened.quarantined == 1
    reasons = (tmp_path / "quarantine" / "reasons.txt").read_text().splitlines()
    size = offsets[41] - offsets[40]
    assert reasons == [f"{kept.name}: {size} bytes of {segment.name} at {offsets[40]}: checksum mismatch"]


def test_an_undecodable_record_is_quarantined_too(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    spool.append(batch(0))
    spool.append(CommEventRecord("clock_corrected", 7, 3, T0, "{}"))
    spool.append(batch(1))
    spool.close()
    [segment] = spool.segments()
    data = segment.read_bytes().replace(b'"comm_event"', b'"comm_evenX"')
    payload = data[data.index(b'{"record"') :].split(b"]]", 1)[0]
    payload = payload[: payload.rindex(b"}") + 1]
    start = data.index(payload) - 10
    header = b"HS" + struct.pack("<II", len(payload), zlib.crc32(payload))  # a well-checksummed bad record
    segment.write_bytes(data[:start] + header + data[start + 10 :])
    reopened = Spool(tmp_path)
    reopened.open()
    contents = reopened.load(segment)
    assert contents.entries == [batch(0), batch(1)]
    assert ["undecodable payload: unknown spooled record 'comm_evenX'" in d for d in contents.damage] == [
        True
    ]


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
