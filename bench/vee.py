"""VEE benchmark: validating stored energy readings per pass, against writing them, same run.

Runs on a private embedded PostgreSQL server. Stores ``--intervals`` 15-minute total-register
readings of ``--meters`` meters through the ReadingWriter (1 % of the meters swapped halfway: a
register decrease), then runs one validation pass (headend.billing.vee.validate_new: one query for
the new readings, one update of the suspect marks, one upsert of the watermarks) and reports both in
readings/s, with the floor: a bare SELECT of the same readings.

Usage: python bench/vee.py [--meters 2000] [--intervals 48]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from throwaway import run_on_throwaway_server

from headend.billing.vee import validate_new
from headend.store.migrate import migrate
from headend.store.writer import Reading, ReadingWriter

T0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)


def make_readings(meters: int, intervals: int) -> list[Reading]:
    """Time-major readings; every 100th meter reads 90 % lower from the middle on (a swap)."""
    out = []
    for i in range(intervals):
        for m in range(1, meters + 1):
            value = 1000.0 + m + 0.5 * i
            if m % 100 == 0 and i >= intervals // 2:
                value *= 0.1
            out.append(Reading(m, "energy_import_kwh", T0 + timedelta(minutes=15 * i), value))
    return out


async def run(args: argparse.Namespace, dsn: str, spool: Path) -> None:
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    channel = await conn.fetchval(
        "INSERT INTO channels (name, kind, address) VALUES ('c', 'tcp', '127.0.0.1:1') RETURNING id"
    )
    await conn.executemany(
        "INSERT INTO meters (protocol, address, model, channel_id) VALUES ('dlt645-2007', $1, 'm', $2)",
        [(f"{m:012d}", channel) for m in range(1, args.meters + 1)],
    )
    readings = make_readings(args.meters, args.intervals)
    writer = ReadingWriter(dsn, spool_dir=spool)
    await writer.start()
    started = time.perf_counter()
    await asyncio.gather(*(writer.submit(readings[i : i + 2000]) for i in range(0, len(readings), 2000)))
    write_rate = len(readings) / (time.perf_counter() - started)
    await writer.close()
    started = time.perf_counter()
    rows = await conn.fetch(
        "SELECT meter_id, quantity_id, ts, value FROM readings ORDER BY meter_id, quantity_id, ts"
    )
    select_rate = len(rows) / (time.perf_counter() - started)
    started = time.perf_counter()
    report = await validate_new(conn)
    vee_rate = report.readings / (time.perf_counter() - started)
    mode = await conn.fetchval("SELECT value FROM headend_settings WHERE key = 'storage_mode'")
    await conn.close()
    print(
        f"storage mode {mode}; {args.meters} meters x {args.intervals} intervals = {len(readings):,} readings"
    )
    print(f"{'bare SELECT of the readings (floor)':40s} {select_rate:>12,.0f} readings/s")
    print(f"{'ReadingWriter (storing them)':40s} {write_rate:>12,.0f} readings/s")
    print(
        f"{'validate_new (one pass)':40s} {vee_rate:>12,.0f} readings/s  {vee_rate / write_rate:5.1f}x the"
        f" writer, {select_rate / vee_rate:4.1f}x the floor's time; {report.suspect} suspect,"
        f" {len(report.holds)} holds"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--meters", type=int, default=2_000)
    parser.add_argument("--intervals", type=int, default=48)
    args = parser.parse_args()
    run_on_throwaway_server(run, args)


if __name__ == "__main__":
    main()
