"""The TimescaleDB layout: hypertable, compression, continuous aggregate, policies and ``headend db``.

Runs wherever the test server has TimescaleDB: the embedded server preloads it when it is installed
for its PostgreSQL (unless ``HEADEND_EMBEDDED_TIMESCALEDB=off``), or ``HEADEND_TEST_DSN`` names a
TimescaleDB server. Elsewhere every test here is reported as skipped, with the reason.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from headend.store import maintenance
from headend.store.embedded import TIMESCALEDB_ENV, timescaledb_choice
from headend.store.migrate import detect_mode
from headend.store.writer import Reading, ReadingWriter
from tests.support import cli
from tests.support.operators import PASSWORD, add_operators


@pytest.fixture
async def timescale_dsn(pg_dsn: str) -> str:
    """``pg_dsn`` if its database uses the TimescaleDB layout; otherwise skip, saying why."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        if await maintenance.storage_mode(conn) == "timescale":
            return pg_dsn
        forced = os.environ.get("HEADEND_STORAGE_MODE")
        if forced:
            reason = f"HEADEND_STORAGE_MODE={forced}"
        elif not os.environ.get("HEADEND_TEST_DSN") and timescaledb_choice() == "off":
            reason = f"{TIMESCALEDB_ENV}=off"
        else:
            reason = (await detect_mode(conn))[1]
    finally:
        await conn.close()
    pytest.skip(f"needs TimescaleDB: {reason} (see README, Tests)")


def headend(*args: str) -> cli.CliResult:
    """The CLI with a bare environment: no DSN or state directory of the machine's own."""
    env = {"PATH": "/usr/bin:/bin", "COLUMNS": "200", "HEADEND_OPERATOR_PASSWORD": PASSWORD}
    return cli.headend(*args, env=env)


async def _policies(conn: asyncpg.Connection) -> dict[str, dict[str, str]]:
    """Background jobs on readings and readings_daily: ``{proc_name: config}``."""
    rows = await conn.fetch(
        "SELECT proc_name, config FROM timescaledb_information.jobs"
        " WHERE hypertable_name IN ('readings', 'readings_daily')"
    )
    return {r["proc_name"]: json.loads(r["config"]) for r in rows}


async def test_migrations_build_the_community_layout_with_its_policies(timescale_dsn: str) -> None:
    conn = await asyncpg.connect(timescale_dsn)
    try:
        assert await conn.fetchval("SELECT current_setting('timescaledb.license')") == "timescale"
        interval = await conn.fetchval(
            "SELECT time_interval FROM timescaledb_information.dimensions WHERE hypertable_name = 'readings'"
        )
        assert interval == timedelta(days=1)
        policies = await _policies(conn)
        assert policies["policy_compression"]["compress_after"] == "30 days"
        refresh = policies["policy_refresh_continuous_aggregate"]
        assert (refresh["start_offset"], refresh["end_offset"]) == ("35 days", "01:00:00")
        assert set(policies) == {"policy_compression", "policy_refresh_continuous_aggregate"}
        assert (
            await maintenance.ensure_partitions(conn, datetime(2020, 1, 1, tzinfo=UTC), datetime.now(UTC))
            == 0
        )
    finally:
        await conn.close()


async def test_compressed_hypertable_stays_idempotent_and_feeds_the_daily_aggregate(
    timescale_dsn: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(timescale_dsn)
    try:
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
        writer = ReadingWriter(timescale_dsn, spool_dir=tmp_path / "spool")
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
        daily = await maintenance.daily_values(conn, [2], "energy_import_kwh", day, day + timedelta(days=2))
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


async def test_db_status_and_policy_commands_on_timescaledb(timescale_dsn: str) -> None:
    conn = await asyncpg.connect(timescale_dsn)
    try:
        version = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM operators WHERE id = '1')"):
            await add_operators(conn, o1="admin")
        status = headend("db", "status", "--dsn", timescale_dsn)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "storage mode: timescale" in status.stdout and f"timescaledb: {version}" in status.stdout

        policy = headend(
            "db",
            "policy",
            "--operator",
            "1",
            "--dsn",
            timescale_dsn,
            "--retention-days",
            "400",
            "--compress-after-days",
            "10",
        )
        assert policy.returncode == 0, policy.stdout + policy.stderr
        assert "retention: 400 days" in policy.stdout and "compression after 10 days" in policy.stdout
        policies = await _policies(conn)
        assert policies["policy_retention"]["drop_after"] == "400 days"
        assert policies["policy_compression"]["compress_after"] == "10 days"

        forever = headend("db", "policy", "--operator", "1", "--dsn", timescale_dsn, "--retention-days", "0")
        assert forever.returncode == 0 and "retention: forever" in forever.stdout
        assert "policy_retention" not in await _policies(conn)
    finally:
        await conn.close()
