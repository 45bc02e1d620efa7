"""Gap detection against the real schema, and turning profile records into backfill readings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from headend.config import ReadPlan
from headend.engine.backfill import ProfileRecord, find_gaps, gap_readings
from headend.engine.model import load_inventory
from headend.inventory import import_inventory, read_inventory
from headend.store.reading import Reading
from headend.store.writer import ReadingWriter
from tests.support.logins import daemon_dsn

T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
STEP = timedelta(minutes=15)
PLAN = ReadPlan(quantities=["energy_import_kwh", "power_kw"])


async def test_find_gaps_skips_stored_and_preinstallation_intervals(pg_dsn: str, tmp_path: Path) -> None:
    inv = tmp_path / "inv.toml"
    inv.write_text(
        '[[channels]]\nname = "a"\nurl = "tcp://127.0.0.1:1"\n'
        '[[meters]]\nchannel = "a"\nprotocol = "dlt645-2007"\naddress = "1"\nmodel = "dlt645-generic"\n'
        "installed_at = 2026-05-04T10:00:00Z\n"
        '[[meters]]\nchannel = "a"\nprotocol = "dlt645-2007"\naddress = "2"\nmodel = "dlt645-generic"\n'
        "installed_at = 2026-05-04T11:20:00Z\n"
    )
    conn = await asyncpg.connect(pg_dsn)
    writer = ReadingWriter(daemon_dsn(pg_dsn), spool_dir=tmp_path / "spool")
    try:
        await import_inventory(conn, read_inventory(inv))
        meters = (await load_inventory(conn)).meters_by_channel[1]
        m1, m2 = (m.id for m in meters)
        await writer.start()
        stored = [T0 - 4 * STEP, T0 - 2 * STEP, T0]
        await writer.submit([Reading(m1, "energy_import_kwh", ts, 10.0) for ts in stored])
        await writer.submit([Reading(m2, "power_kw", T0 - STEP, 1.0)])  # not the gap quantity
        await writer.submit([Reading(m2, "energy_import_kwh", T0 - 2 * STEP, None, "missing", "backfill")])
        gaps = await find_gaps(conn, meters, lambda _m: PLAN, T0 - 6 * STEP, T0, STEP.total_seconds(), 100)
        assert gaps[m1] == [T0 - 6 * STEP, T0 - 5 * STEP, T0 - 3 * STEP, T0 - STEP]
        # installed 11:20 -> first interval 11:30; a missing marker closes its gap
        assert gaps[m2] == [T0 - STEP, T0]
        limited = await find_gaps(conn, meters, lambda _m: PLAN, T0 - 6 * STEP, T0, STEP.total_seconds(), 2)
        assert limited[m1] == [T0 - 3 * STEP, T0 - STEP]
    finally:
        await writer.close()
        await conn.close()


def test_gap_readings_from_profile_freeze_and_no_memory() -> None:
    gaps = [T0 - 3 * STEP, T0 - 2 * STEP, T0 - STEP, T0]
    records = [
        ProfileRecord(T0 - 3 * STEP, {"energy_import_kwh": 5.0, "power_kw": 1.5, "voltage_a_v": 230.0}),
        ProfileRecord(T0 - STEP, {"energy_import_kwh": 5.5}, "freeze"),
        ProfileRecord(T0 - 10 * STEP, {"energy_import_kwh": 4.0}),  # not a gap: ignored
    ]
    out = gap_readings(9, PLAN, gaps, records)
    got = {(r.ts, r.quantity): (r.value, r.quality, r.source) for r in out}
    assert got == {
        (T0 - 3 * STEP, "energy_import_kwh"): (5.0, "backfilled", "profile"),
        (T0 - 3 * STEP, "power_kw"): (1.5, "backfilled", "profile"),
        (T0 - 2 * STEP, "energy_import_kwh"): (None, "missing", "backfill"),
        (T0 - 2 * STEP, "power_kw"): (None, "missing", "backfill"),
        (T0 - STEP, "energy_import_kwh"): (5.5, "freeze", "freeze"),
    }  # T0 is after the newest record: left open, the meter may not have stored it yet
    no_memory = gap_readings(9, PLAN, gaps[:2], None)
    assert [(r.ts, r.quantity, r.quality, r.value) for r in no_memory] == [
        (gaps[0], "energy_import_kwh", "missing", None),
        (gaps[0], "power_kw", "missing", None),
        (gaps[1], "energy_import_kwh", "missing", None),
        (gaps[1], "power_kw", "missing", None),
    ]


def test_a_gap_the_profile_never_filled_is_missing_once_a_profile_period_has_passed() -> None:
    """One-minute reads, a 15-minute profile: a minute the DTU was offline has no record now and never
    will; once a profile period has passed it is stored as ``missing`` (newer minutes stay open)."""
    minute = timedelta(minutes=1)
    gaps = [T0 + 3 * minute, T0 + 4 * minute, T0 + 20 * minute]
    out = gap_readings(9, PLAN, gaps, [], settled_before=T0 + 16 * minute)
    assert [(r.ts, r.quantity, r.quality, r.value) for r in out] == [
        (gaps[0], "energy_import_kwh", "missing", None),
        (gaps[0], "power_kw", "missing", None),
        (gaps[1], "energy_import_kwh", "missing", None),
        (gaps[1], "power_kw", "missing", None),
    ]
    assert gap_readings(9, PLAN, gaps, []) == []  # without the settle time: all left open (as before)
