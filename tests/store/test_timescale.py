"""TimescaleDB path: runs when HEADEND_TEST_DSN points at a TimescaleDB 2.x server (see the docstring
of tests/support/postgres.py); the embedded test server has no TimescaleDB."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from headend.store import maintenance
from headend.store.writer import Reading, ReadingWriter

if os.environ.get("HEADEND_TEST_DSN"):

    async def test_compressed_hypertable_stays_idempotent_and_feeds_the_daily_aggregate(
        pg_dsn: str, tmp_path: Path
    ) -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            assert await maintenance.storage_mode(conn) == "timescale", "HEADEND_TEST_DSN needs TimescaleDB"
            settings = await conn.fetch(
                "SELECT attname, segmentby_column_index, orderby_column_index"
                " FROM timescaledb_information.compression_settings WHERE hypertable_name = 'readings'"
            )
            assert {s["attname"] for s in settings if s["segmentby_column_index"]} == {"meter_id"}
            day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=60)
            old = [
                Reading(m, "energy_import_kwh", day + timedelta(minutes=15 * i), 10.0 * m + i / 4)
                for m in (1, 2, 3)
                for i in range(96 * 2)
            ]
            writer = ReadingWriter(pg_dsn, spool_dir=tmp_path / "spool")
            await writer.start()
            await writer.submit(old)
            compressed = await conn.fetch(
                "SELECT compress_chunk(c) FROM show_chunks('readings', older_than => interval '30 days') c"
            )
            assert len(compressed) == 2
            flags = await conn.fetch(
                "SELECT is_compressed FROM timescaledb_information.chunks WHERE hypertable_name = 'readings'"
            )
            assert flags and all(f["is_compressed"] for f in flags)

            late = [Reading(4, "energy_import_kwh", day + timedelta(hours=1), 5.0, "backfilled", "profile")]
            await writer.submit(old + late)  # a replay into compressed chunks plus one late reading
            await writer.close()
            assert writer.written == len(old) + 1 and writer.duplicates == len(old)
            assert await conn.fetchval("SELECT count(*) FROM readings") == len(old) + 1

            await maintenance.refresh_daily(conn, day, day + timedelta(days=2))
            daily = await maintenance.daily_values(
                conn, [2], "energy_import_kwh", day, day + timedelta(days=2)
            )
            assert [(r["first_value"], r["last_value"], r["readings"]) for r in daily] == [
                (20.0, 20.0 + 95 / 4, 96),
                (20.0 + 96 / 4, 20.0 + 191 / 4, 96),
            ]
            materialized = await conn.fetchval(
                "SELECT count(*) FROM _timescaledb_catalog.continuous_agg ca"
                " JOIN _timescaledb_catalog.hypertable h ON h.id = ca.mat_hypertable_id"
                " WHERE ca.user_view_name = 'readings_daily'"
            )
            assert materialized == 1
        finally:
            await conn.close()
