"""ReadingWriter against a real PostgreSQL: storage, idempotency, validation, backpressure."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest

from headend.store.spool import Spool
from headend.store.writer import InvalidReading, Reading, ReadingWriter
from tests.support.logins import daemon_dsn

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def grid(
    meters: range, intervals: int, start: datetime = T0, quantity: str = "energy_import_kwh"
) -> list[Reading]:
    return [
        Reading(m, quantity, start + timedelta(minutes=15 * i), float(m * 1000 + i))
        for i in range(intervals)
        for m in meters
    ]


@pytest.fixture
async def writer(pg_dsn: str, tmp_path: Path):
    w = ReadingWriter(daemon_dsn(pg_dsn), spool_dir=tmp_path / "spool")
    await w.start()
    yield w
    await w.close()


async def fetch_all(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(
            "SELECT r.meter_id, q.name AS quantity, r.ts, r.value, r.quality::text AS quality,"
            " s.name AS source FROM readings r JOIN quantities q ON q.id = r.quantity_id"
            " JOIN reading_sources s ON s.id = r.source_id"
            " ORDER BY r.meter_id, q.name, r.ts"
        )
    finally:
        await conn.close()


async def test_readings_are_stored_with_names_quality_and_utc_time(
    writer: ReadingWriter, pg_dsn: str
) -> None:
    cst = timezone(timedelta(hours=8))
    await writer.submit(
        [
            Reading(7, "energy_import_kwh", datetime(2026, 3, 2, 8, 15, tzinfo=cst), 1234.5),
            Reading(7, "voltage_a_v", datetime(2026, 3, 2, 8, 15, tzinfo=cst), 229.8, "suspect", "poll"),
            Reading(
                7, "energy_import_kwh", datetime(2026, 3, 2, 8, 30, tzinfo=cst), None, "missing", "gap_scan"
            ),
            Reading(8, "energy_import_t1_kwh", T0, 10.0, "backfilled", "profile"),
        ]
    )
    rows = [tuple(r) for r in await fetch_all(pg_dsn)]
    assert rows == [
        (7, "energy_import_kwh", datetime(2026, 3, 2, 0, 15, tzinfo=UTC), 1234.5, "actual", "poll"),
        (7, "energy_import_kwh", datetime(2026, 3, 2, 0, 30, tzinfo=UTC), None, "missing", "gap_scan"),
        (7, "voltage_a_v", datetime(2026, 3, 2, 0, 15, tzinfo=UTC), 229.8, "suspect", "poll"),
        (8, "energy_import_t1_kwh", T0, 10.0, "backfilled", "profile"),
    ]
    assert writer.written == 4 and writer.duplicates == 0 and writer.pending == 0


async def test_reingest_is_idempotent_and_counts_duplicates(writer: ReadingWriter, pg_dsn: str) -> None:
    first = grid(range(1, 51), 8)
    await writer.submit(first)
    await writer.submit(first)  # an exact replay
    overlapping = grid(range(41, 61), 12)  # 10 meters overlap 8 stored intervals, the rest is new
    await writer.submit(overlapping)
    rows = await fetch_all(pg_dsn)
    expected = {(r.meter_id, r.ts) for r in first} | {(r.meter_id, r.ts) for r in overlapping}
    assert len(rows) == len(expected) == len({(r["meter_id"], r["ts"]) for r in rows})
    assert writer.written == len(expected)
    assert writer.duplicates == len(first) + 10 * 8
    stored = {(r["meter_id"], r["ts"]): r["value"] for r in rows}
    assert all(stored[(r.meter_id, r.ts)] == r.value for r in first)


async def test_duplicates_inside_one_batch_are_stored_once(writer: ReadingWriter, pg_dsn: str) -> None:
    batch = grid(range(1, 4), 2)
    await writer.submit(batch + batch[:2])
    assert len(await fetch_all(pg_dsn)) == 6
    assert writer.written == 6 and writer.duplicates == 2


@pytest.mark.parametrize(
    ("reading", "message"),
    [
        (Reading(1, "energy_import_kwh", datetime(2026, 3, 2), 1.0), "timezone-aware"),
        (Reading(1, "energy_import_kwh", T0, math.nan), "finite number"),
        (Reading(1, "energy_import_kwh", T0, 1.0, "guessed"), "quality must be one of"),
        (Reading(1, "energy_import_kwh", T0, None), "only 'missing' has no value"),
        (Reading(1, "energy_import_kwh", T0, 3.0, "missing"), "must not carry a value"),
        (Reading(0, "energy_import_kwh", T0, 1.0), "meter_id must be a positive"),
        (Reading(1, "Energy Import", T0, 1.0), "lower_snake_case"),
        (Reading(1, "energy_import_kwh", T0, "12.5"), "finite number"),  # type: ignore[arg-type]
    ],
)
async def test_invalid_reading_is_refused_and_nothing_of_its_batch_is_stored(
    writer: ReadingWriter, pg_dsn: str, reading: Reading, message: str
) -> None:
    good = Reading(2, "energy_import_kwh", T0, 5.0)
    with pytest.raises(InvalidReading, match=message):
        await writer.submit([good, reading])
    assert await fetch_all(pg_dsn) == []
    await writer.submit([good])  # the writer is still healthy
    assert len(await fetch_all(pg_dsn)) == 1


async def test_backpressure_bounds_pending_readings(pg_dsn: str, tmp_path: Path) -> None:
    writer = ReadingWriter(
        daemon_dsn(pg_dsn), spool_dir=tmp_path / "spool", max_pending=1_000, batch_size=500
    )
    await writer.start()
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, writer.pending)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    batches = [grid(range(1, 101), 5, T0 + timedelta(days=d)) for d in range(20)]
    await asyncio.gather(*(writer.submit(b) for b in batches))
    watcher.cancel()
    await writer.close()
    assert 500 <= peak <= 1_000
    assert len(await fetch_all(pg_dsn)) == 20 * 500


async def test_far_past_and_future_intervals_get_storage(writer: ReadingWriter, pg_dsn: str) -> None:
    stamps = [datetime(2019, 5, 1, tzinfo=UTC), datetime(2031, 1, 1, 0, 15, tzinfo=UTC)]
    await writer.submit([Reading(3, "energy_import_kwh", ts, 1.0) for ts in stamps])
    rows = await fetch_all(pg_dsn)
    assert [r["ts"] for r in rows] == stamps
    conn = await asyncpg.connect(pg_dsn)
    try:
        if await conn.fetchval("SELECT value FROM headend_settings WHERE key = 'storage_mode'") == "native":
            names = {r[0] for r in await conn.fetch("SELECT name FROM readings_partitions")}
            assert {"readings_p20190429", "readings_p20301230"} <= names  # Monday-aligned weekly partitions
    finally:
        await conn.close()


async def test_submit_after_close_is_refused(pg_dsn: str, tmp_path: Path) -> None:
    writer = ReadingWriter(daemon_dsn(pg_dsn), spool_dir=tmp_path / "spool")
    await writer.start()
    await writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        await writer.submit(grid(range(1, 2), 1))


async def test_spool_left_by_a_previous_run_is_replayed_and_damage_is_quarantined(
    pg_dsn: str, tmp_path: Path
) -> None:
    """A flipped byte in one record of a spooled segment costs that record only: the records before
    and after it are stored, the damaged one is set aside in quarantine/ and counted."""
    spool = Spool(tmp_path / "spool")
    spool.open()
    spool.append(grid(range(1, 11), 2))
    second_record = spool.size_bytes
    spool.append(grid(range(11, 21), 2))
    spool.append(grid(range(21, 31), 2))
    spool.seal()
    spool.append(grid(range(31, 41), 2))  # a second, intact segment
    spool.close()
    first = spool.segments()[0]
    data = bytearray(first.read_bytes())
    data[second_record + 30] ^= 0xFF
    first.write_bytes(bytes(data))

    writer = ReadingWriter(daemon_dsn(pg_dsn), spool_dir=tmp_path / "spool", retry_interval=0.1)
    await writer.start()
    assert writer.mode == "spooling"
    await asyncio.wait_for(writer.wait_replayed(), 30)
    await writer.close()
    meters = sorted({r["meter_id"] for r in await fetch_all(pg_dsn)})
    assert meters == [*range(1, 11), *range(21, 41)]
    assert list((tmp_path / "spool" / "rejected").iterdir()) == []
    assert len(list((tmp_path / "spool" / "quarantine").glob("*.bad"))) == writer.spool_quarantined == 1
    assert writer.replayed == 60 and writer.spool_bytes == 0 and "quarantined" in (writer.last_error or "")


async def test_lanes_creating_the_same_new_partition_concurrently(pg_dsn: str, tmp_path: Path) -> None:
    writer = ReadingWriter(daemon_dsn(pg_dsn), spool_dir=tmp_path / "spool", lanes=4, batch_size=100)
    await writer.start()
    week = datetime(2040, 1, 2, tzinfo=UTC)
    batches = [grid(range(100 * k + 1, 100 * k + 101), 1, week + timedelta(hours=k)) for k in range(8)]
    await asyncio.gather(*(writer.submit(b) for b in batches))
    await writer.close()
    assert writer.rejected == 0 and writer.written == 800
    assert len(await fetch_all(pg_dsn)) == 800
