"""The reading rules' hourly summary kept up to date incrementally (migration 0070,
headend/store/reading_hours.py): after every kind of change a seeded plan makes (readings in order, a
late reading for an old interval, a reading marked suspect, a pass reaching further back, hours
pruned), the window summary the pass builds from the summary's six-hour blocks, its hours and the split
boundary hours' readings is row for row the one the previous statement computed from every reading
(kept here as the reference), at pass times on and off the hour, for windows of hours and of a day; and
the incremental summary and its blocks equal a rebuild."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import asyncpg

from headend.store.exception_rules import WINDOW_SUMMARY_FROM_READINGS
from headend.store.exceptions import drop_window_summary, summarise_window
from headend.store.maintenance import ensure_partitions
from headend.store.reading_hours import fold, hour_start

T0 = datetime(2026, 6, 10, 0, 0, tzinfo=UTC)
MINUTE, HOUR = timedelta(minutes=1), timedelta(hours=1)
QUANTITIES = ("energy_import_kwh", "energy_export_kwh", "current_a_a", "current_b_a", "voltage_a_v")


_COLUMNS = (
    "meter_id, quantity_id, n, vmin, vmax, total, first_ts, last_ts, last_value, drop_ts, recent_first_ts,"
    " recent_first, past_first_ts, past_first, past_last_ts, past_last"
)


def _plan(rng: random.Random, meters: int) -> list[tuple[int, str, datetime, float, str]]:
    """Readings every 15 minutes over a day and a half, registers mostly rising with a few drops,
    phases every half hour, some gaps and some readings not usable (estimated, suspect)."""
    rows = []
    for m in range(1, meters + 1):
        for q in QUANTITIES:
            value = rng.uniform(0, 100)
            for i in range(0, 36 * 4):
                if rng.random() < 0.1 or (q.startswith(("current", "voltage")) and i % 2):
                    continue
                if q.startswith("energy"):
                    value += rng.choice((0.0, 0.5, 1.0, 1.0, 2.0, -3.0 if rng.random() < 0.05 else 0.5))
                else:
                    value = rng.uniform(0, 240)
                quality = (
                    "actual" if rng.random() < 0.9 else rng.choice(("estimated", "backfilled", "suspect"))
                )
                rows.append((m, q, T0 + i * 15 * MINUTE, round(value, 3), quality))
    return rows


async def _store(owner: asyncpg.Connection, rows: list[tuple[int, str, datetime, float, str]]) -> None:
    await owner.executemany(
        "INSERT INTO readings (meter_id, quantity_id, ts, value, quality, source_id)"
        " SELECT $1, q.id, $3, $4, $5::reading_quality, s.id FROM quantities q, reading_sources s"
        " WHERE q.name = $2 AND s.name = 'test'",
        rows,
    )


async def _compare(
    daemon: asyncpg.Connection,
    owner: asyncpg.Connection,
    at: datetime,
    window_h: float = 3,
    history_h: float = 12,
) -> int:
    """The pass's window summary at ``at`` against the reference; returns how many rows matched."""
    params = (at, window_h * 3600, 3600.0, history_h * 3600, 0.5)
    await summarise_window(daemon, *params)
    ours = await daemon.fetch(f"SELECT {_COLUMNS} FROM exception_window ORDER BY 1, 2")
    await drop_window_summary(daemon)
    await owner.execute("DROP TABLE IF EXISTS reference_window")
    await owner.execute(WINDOW_SUMMARY_FROM_READINGS.format(table="reference_window"), *params)
    reference = await owner.fetch(f"SELECT {_COLUMNS} FROM reference_window ORDER BY 1, 2")
    assert len(ours) == len(reference) > 0
    for a, b in zip(ours, reference, strict=True):
        got, want = dict(a), dict(b)
        assert abs(got.pop("total") - want.pop("total")) < 1e-6, (at, got, want)  # summed per hour first
        assert got == want, (at, got, want)
    return len(ours)


async def _summary(owner: asyncpg.Connection, table: str = "reading_hours") -> list[asyncpg.Record]:
    return await owner.fetch(f"SELECT * FROM {table} ORDER BY 1, 2, 3")


async def test_the_summary_gives_what_every_reading_gave(pg_dsn: str, logins: dict[str, str]) -> None:
    rng = random.Random(24)
    owner = await asyncpg.connect(pg_dsn)
    daemon = await asyncpg.connect(logins["daemon"])
    try:
        await ensure_partitions(owner, T0 - timedelta(days=1), T0 + timedelta(days=3))
        await owner.executemany("INSERT INTO quantities (name) VALUES ($1)", [(q,) for q in QUANTITIES])
        await owner.execute("INSERT INTO reading_sources (name) VALUES ('test')")
        rows = _plan(rng, 4)
        rng.shuffle(rows)
        late, rows = rows[:40], rows[40:]
        early = [r for r in rows if r[2] < T0 + timedelta(hours=20)]
        await _store(owner, early)
        for at in (T0 + timedelta(hours=18), T0 + timedelta(hours=19, minutes=7)):
            await _compare(daemon, owner, at)

        await _store(owner, [r for r in rows if r[2] >= T0 + timedelta(hours=20)])
        await _store(owner, late)  # late readings, old intervals among them
        await owner.execute(
            "UPDATE readings SET quality = 'suspect' WHERE ts = $1 OR ts = $2",
            T0 + timedelta(hours=30, minutes=15),
            T0 + timedelta(hours=31),
        )
        dirty = await owner.fetchval("SELECT count(*) FROM reading_hours_dirty")
        assert dirty >= 3  # the inserts and the update each said what they touched
        for at in (
            T0 + timedelta(hours=31, minutes=22, seconds=30),
            T0 + timedelta(hours=31, minutes=15),  # every boundary on a reading inside its hour
            T0 + timedelta(hours=31, seconds=40),  # just after a cycle: the boundaries between hours
            T0 + timedelta(hours=33),
            T0 + timedelta(hours=35, minutes=59),
        ):
            await _compare(daemon, owner, at)
        for at in (  # day-long windows: the six-hour blocks read instead of their hours
            T0 + timedelta(hours=30),  # every boundary on a block's end
            T0 + timedelta(hours=31, seconds=40),
            T0 + timedelta(hours=35, minutes=15),
        ):
            await _compare(daemon, owner, at, window_h=24, history_h=30)
        assert await owner.fetchval(
            "SELECT count(*) FROM reading_blocks WHERE block_end = $1", T0 + 30 * HOUR
        )
        await _compare(daemon, owner, T0 + timedelta(hours=12, minutes=40))  # further back than kept: folded
        assert await owner.fetchval("SELECT count(*) FROM reading_hours_dirty") == 0

        incremental, blocks = await _summary(owner), await _summary(owner, "reading_blocks")
        assert {b["block_end"] for b in blocks} == {T0 + n * HOUR for n in (6, 12, 18, 24, 30)}
        await owner.execute("DELETE FROM reading_hours")
        await owner.execute("DELETE FROM reading_blocks")
        await owner.execute(
            "INSERT INTO reading_hours_dirty (lo, hi) VALUES ($1, $2)",
            T0 - timedelta(hours=1),
            T0 + timedelta(days=2),
        )
        await fold(daemon, hour_start(T0), T0 + timedelta(hours=35, minutes=59))
        assert await _summary(owner) == [r for r in incremental if r["hour_end"] > T0]
        assert await _summary(owner, "reading_blocks") == blocks  # the blocks equal their hours
    finally:
        await daemon.close()
        await owner.close()
