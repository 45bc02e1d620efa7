"""Migrations against a real PostgreSQL server: from empty, re-run, tampering, roles, status."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import pytest

from headend.store.migrate import MIGRATIONS_DIR, MigrationError, discover, migrate, status
from tests.support.postgres import PgServer

EXPECTED_TABLES = {
    "channels",
    "meters",
    "quantities",
    "reading_sources",
    "readings",
    "events",
    "accounts",
    "tariffs",
    "tariff_prices",
    "payments",
    "ledger",
    "balances",
    "bills",
    "commands",
    "audit_log",
    "read_cycles",
    "headend_settings",
    "headend_migrations",
}


@pytest.fixture
async def empty_dsn(pg_server: PgServer):
    """A brand-new database with no schema at all."""
    conn = await asyncpg.connect(pg_server.admin_dsn)
    name = "headend_empty_migrations"
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_server.dsn(name)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def test_migrate_from_empty_then_rerun_is_noop(empty_dsn: str) -> None:
    labels = [m.label for m in discover()]
    assert await migrate(empty_dsn) == labels
    assert await migrate(empty_dsn) == []
    conn = await asyncpg.connect(empty_dsn)
    try:
        rows = await conn.fetch(
            "SELECT relname FROM pg_class"
            " WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')"
        )
        tables = {r["relname"] for r in rows}
        assert tables >= EXPECTED_TABLES
        assert await conn.fetchval("SELECT count(*) FROM headend_migrations") == len(labels)
        rows = await conn.fetch("SELECT rolname FROM pg_roles WHERE rolname LIKE 'headend_%'")
        roles = {r["rolname"] for r in rows}
        assert roles >= {"headend_daemon", "headend_billing", "headend_reporting"}
    finally:
        await conn.close()
    report = await status(empty_dsn)
    assert report.pending == [] and report.problems == []
    assert report.mode in ("native", "timescale")


async def test_status_before_migrating_lists_everything_pending(empty_dsn: str) -> None:
    report = await status(empty_dsn)
    assert report.mode is None
    assert report.pending == [m.label for m in discover()]
    assert "would use" in report.mode_reason


async def test_an_empty_migration_set_is_an_error_never_up_to_date(empty_dsn: str, tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="no migrations found"):
        await migrate(empty_dsn, directory=tmp_path)
    with pytest.raises(MigrationError, match="no migrations found"):
        await status(empty_dsn, directory=tmp_path / "absent")
    conn = await asyncpg.connect(empty_dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('headend_migrations')") is None
    finally:
        await conn.close()


async def test_tampered_migration_is_detected(empty_dsn: str, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    await migrate(empty_dsn, directory=directory)
    core = directory / "0001_core.sql"
    core.write_text(core.read_text() + "\n-- a harmless-looking edit\n")
    with pytest.raises(MigrationError, match="0001_core was edited after it was applied"):
        await migrate(empty_dsn, directory=directory)
    report = await status(empty_dsn, directory=directory)
    assert any("0001_core" in p for p in report.problems)


async def test_new_migration_applies_alone_and_missing_file_is_reported(empty_dsn: str, tmp_path: Path):
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    await migrate(empty_dsn, directory=directory)
    (directory / "0900_extra.sql").write_text("CREATE TABLE extra_things (id int PRIMARY KEY);")
    assert await migrate(empty_dsn, directory=directory) == ["0900_extra"]
    (directory / "0900_extra.sql").unlink()
    with pytest.raises(MigrationError, match=r"0900_extra .*file is missing"):
        await migrate(empty_dsn, directory=directory)


async def test_failing_migration_rolls_back_and_is_not_recorded(empty_dsn: str, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    (directory / "0900_broken.sql").write_text("CREATE TABLE half_done (id int); SELECT 1/0;")
    with pytest.raises(asyncpg.DivisionByZeroError):
        await migrate(empty_dsn, directory=directory)
    conn = await asyncpg.connect(empty_dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
        assert await conn.fetchval("SELECT count(*) FROM headend_migrations WHERE version = 900") == 0
    finally:
        await conn.close()


async def test_readings_layout_matches_the_servers_capabilities(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        mode = await conn.fetchval("SELECT value FROM headend_settings WHERE key = 'storage_mode'")
        preloaded = "timescaledb" in await conn.fetchval("SHOW shared_preload_libraries")
        assert mode == ("timescale" if preloaded else "native")
        if mode == "timescale":
            hypertables = await conn.fetch(
                "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"
            )
            assert [tuple(h) for h in hypertables] == [("readings", True)]
            caggs = await conn.fetch(
                "SELECT view_name FROM timescaledb_information.continuous_aggregates ORDER BY view_name"
            )
            assert [c["view_name"] for c in caggs] == ["readings_daily", "readings_hourly"]
        else:
            assert await conn.fetchval("SELECT relkind FROM pg_class WHERE relname='readings'") == b"p"
            assert await conn.fetchval("SELECT count(*) FROM readings_partitions") >= 7
            for view in ("readings_daily", "readings_hourly"):
                assert await conn.fetchval("SELECT relkind FROM pg_class WHERE relname = $1", view) == b"v"
    finally:
        await conn.close()


def test_discover_rejects_half_a_mode_pair(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0002_b.native.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="needs both"):
        discover(tmp_path)
    (tmp_path / "0002_b.native.sql").unlink()
    (tmp_path / "2_bad.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="expected NNNN_name"):
        discover(tmp_path)


async def test_audit_log_rejects_update_delete_truncate(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("INSERT INTO audit_log (actor, action) VALUES ('op1', 'test.entry')")
        changes = ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log", "TRUNCATE audit_log")
        for sql in changes:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(sql)
        assert await conn.fetchval("SELECT actor FROM audit_log") == "op1"
    finally:
        await conn.close()


async def test_concurrent_migrate_runs_apply_each_migration_once(empty_dsn: str) -> None:
    first, second = await asyncio.gather(migrate(empty_dsn), migrate(empty_dsn))
    labels = [m.label for m in discover()]
    assert sorted([first, second], key=len) == [[], labels]


async def test_billing_migration_applies_to_a_database_already_on_the_operators_schema(
    empty_dsn: str, tmp_path: Path
) -> None:
    """A database migrated without the billing migrations (0007, 0013, and 0024 that builds on 0013's
    guard, 0058 on 0017's, 0069 on 0007's holds) gets them on the next migrate, and ends with the same
    guards as a fresh one."""
    older = tmp_path / "older"
    older.mkdir()
    for path in MIGRATIONS_DIR.glob("*.sql"):
        if not path.name.startswith(
            ("0007_", "0013_", "0017_", "0018_", "0024_", "0033_", "0034_", "0058_", "0069_")
        ):
            shutil.copy(path, older / path.name)
    applied = await migrate(empty_dsn, directory=older)
    assert "0008_operators" in applied and "0007_billing_trust" not in applied
    assert await migrate(empty_dsn) == [
        "0007_billing_trust",
        "0013_billing_operators",
        "0017_guarded_writes",
        "0018_assignments_are_the_truth",
        "0024_tariff_revisions",
        "0033_manual_approval_and_guarded_records",
        "0034_meters_lose_their_account_copy",
        "0058_pre_trip_alarm",
        "0069_vee_hold_notes",
    ]
    conn = await asyncpg.connect(empty_dsn)
    try:
        triggers = await conn.fetch(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgname LIKE ANY($1::text[])",
            ["readings_update_guard", "vee_holds_guard", "meter_assignments_writer", "ledger_writer"],
        )
        assert len({t["tgname"] for t in triggers}) == 4
    finally:
        await conn.close()
