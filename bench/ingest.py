"""Ingest benchmark: readings/s through ReadingWriter vs a naive executemany baseline, same run.

Runs on a private embedded PostgreSQL server with its durable default settings (fsync and
synchronous_commit on: every acknowledged batch is committed to disk). Phases:

* ``new``        fresh intervals (COPY fast path)
* ``replay``     the same readings again (all duplicates: staging + ON CONFLICT DO NOTHING path)
* ``mixed``      batches where 10% of readings are already stored (staging + ON CONFLICT path)
* ``baseline``   executemany(INSERT ... ON CONFLICT DO NOTHING), the naive idempotent insert
* ``untracked``  fresh intervals again with the readings trigger of the rules' hourly summary disabled
                 (migration 0070) dropped, to show what that trigger costs the fast path in the same run

Usage: python bench/ingest.py [--meters 2500] [--intervals 100] [--batch 20000] [--lanes 2]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from throwaway import run_on_throwaway_server

from headend.store.maintenance import ensure_partitions
from headend.store.migrate import migrate
from headend.store.writer import Reading, ReadingWriter

QUANTITIES = ("energy_import_kwh", "energy_import_t1_kwh", "energy_import_t2_kwh", "voltage_a_v")
T0 = datetime(2026, 6, 1, tzinfo=UTC)


def make_readings(meters: int, intervals: int, start: datetime) -> list[Reading]:
    """Time-major readings, as a polling cycle produces them."""
    return [
        Reading(m, q, start + timedelta(minutes=15 * i), float(m + i))
        for i in range(intervals)
        for m in range(1, meters + 1)
        for q in QUANTITIES
    ]


async def through_writer(dsn: str, spool: Path, readings: list[Reading], batch: int, lanes: int) -> float:
    """Readings/s: the engine submits chunks concurrently and each returns once committed."""
    writer = ReadingWriter(dsn, spool_dir=spool, batch_size=batch, lanes=lanes)
    await writer.start()
    chunk = 2_000  # what one engine cycle slice hands over at once
    started = time.perf_counter()
    await asyncio.gather(*(writer.submit(readings[i : i + chunk]) for i in range(0, len(readings), chunk)))
    elapsed = time.perf_counter() - started
    await writer.close()
    assert writer.spooled == 0, "the benchmark must not touch the spool"
    return len(readings) / elapsed


async def naive_executemany(dsn: str, readings: list[Reading]) -> float:
    """Readings/s of executemany(INSERT ... ON CONFLICT DO NOTHING), 10k rows per transaction."""
    conn = await asyncpg.connect(dsn)
    qids = {r["name"]: r["id"] for r in await conn.fetch("SELECT id, name FROM quantities")}
    sid = await conn.fetchval("SELECT id FROM reading_sources WHERE name = 'poll'")
    rows = [(r.meter_id, qids[r.quantity], r.ts, r.value, r.quality, sid) for r in readings]
    await ensure_partitions(conn, readings[0].ts, readings[-1].ts)  # the writer does this itself
    sql = (
        "INSERT INTO readings (meter_id, quantity_id, ts, value, quality, source_id)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING"
    )
    started = time.perf_counter()
    for i in range(0, len(rows), 10_000):
        async with conn.transaction():
            await conn.executemany(sql, rows[i : i + 10_000])
    elapsed = time.perf_counter() - started
    await conn.close()
    return len(rows) / elapsed


async def run(args: argparse.Namespace, dsn: str, spool: Path) -> None:
    await migrate(dsn)
    new = make_readings(args.meters, args.intervals, T0)
    later = make_readings(args.meters, args.intervals, T0 + timedelta(days=10))
    mixed = [new[i] if i % 10 == 0 else r for i, r in enumerate(later)]  # every batch holds 10% stored ones
    baseline = make_readings(args.meters, max(1, args.intervals // 5), T0 + timedelta(days=40))
    untracked = make_readings(args.meters, args.intervals, T0 + timedelta(days=20))

    conn = await asyncpg.connect(dsn)
    results = {"writer new (COPY fast path)": await through_writer(dsn, spool, new, args.batch, args.lanes)}
    await conn.execute("DROP TRIGGER reading_hours_inserted ON readings")
    results["writer new, summary trigger off"] = await through_writer(
        dsn, spool, untracked, args.batch, args.lanes
    )
    await conn.execute(
        "CREATE TRIGGER reading_hours_inserted AFTER INSERT ON readings REFERENCING NEW TABLE AS touched"
        " FOR EACH STATEMENT EXECUTE FUNCTION reading_hours_touched()"
    )
    results["writer replay (100% duplicates)"] = await through_writer(dsn, spool, new, args.batch, args.lanes)
    results["writer mixed (10% duplicates)"] = await through_writer(dsn, spool, mixed, args.batch, args.lanes)
    base = await naive_executemany(dsn, baseline)
    mode = await conn.fetchval("SELECT value FROM headend_settings WHERE key = 'storage_mode'")
    version = await conn.fetchval("SHOW server_version")
    await conn.close()
    print(f"embedded PostgreSQL {version} (durable settings), storage mode {mode}")
    print(f"{len(new):,} readings per writer phase, batch {args.batch}, {args.lanes} lanes")
    print(f"{'baseline executemany ON CONFLICT':36s} {base:>12,.0f} readings/s  ({len(baseline):,} readings)")
    for name, rate in results.items():
        print(f"{name:36s} {rate:>12,.0f} readings/s  {rate / base:5.1f}x baseline")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--meters", type=int, default=2_500)
    parser.add_argument("--intervals", type=int, default=100)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--lanes", type=int, default=2)
    args = parser.parse_args()
    run_on_throwaway_server(run, args)


if __name__ == "__main__":
    main()
