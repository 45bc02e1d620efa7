"""``headend db`` end to end: a subprocess against a real server."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from tests.support import cli
from tests.support.operators import PASSWORD, add_operators
from tests.support.postgres import PgServer


def headend(*args: str) -> cli.CliResult:
    """The CLI with a bare environment: no DSN or state directory of the machine's own."""
    env = {"PATH": "/usr/bin:/bin", "COLUMNS": "200", "HEADEND_OPERATOR_PASSWORD": PASSWORD}
    return cli.headend(*args, env=env)


@pytest.mark.long(seconds=35)
async def test_db_migrate_then_status_then_rerun(pg_server: PgServer) -> None:
    admin = await asyncpg.connect(pg_server.admin_dsn)
    await admin.execute('DROP DATABASE IF EXISTS "headend_cli" WITH (FORCE)')
    await admin.execute('CREATE DATABASE "headend_cli"')
    dsn = pg_server.dsn("headend_cli")
    try:
        before = headend("db", "status", "--dsn", dsn)
        assert before.returncode == 0, before.stdout + before.stderr
        assert "not migrated" in before.stdout and "0001_core" in before.stdout and "pending" in before.stdout

        first = headend("db", "migrate", "--dsn", dsn)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "applied 0001_core" in first.stdout and "applied 0005_grants" in first.stdout

        again = headend("db", "migrate", "--dsn", dsn)
        assert again.stdout.strip() == "up to date"

        after = headend("db", "status", "--dsn", dsn)
        conn = await asyncpg.connect(dsn)
        mode = await conn.fetchval("SELECT value FROM headend_settings WHERE key = 'storage_mode'")
        await conn.close()
        assert f"storage mode: {mode}" in after.stdout
        assert "pending" not in after.stdout
    finally:
        await admin.execute('DROP DATABASE IF EXISTS "headend_cli" WITH (FORCE)')
        await admin.close()


@pytest.mark.long(seconds=35)
async def test_db_policy_on_native_partitions(pg_server: PgServer) -> None:
    """Forced native even where TimescaleDB is preloaded: retention is recorded, compression refused."""
    admin = await asyncpg.connect(pg_server.admin_dsn)
    await admin.execute('DROP DATABASE IF EXISTS "headend_cli_native" WITH (FORCE)')
    await admin.execute('CREATE DATABASE "headend_cli_native"')
    dsn = pg_server.dsn("headend_cli_native")
    try:
        migrated = headend("db", "migrate", "--dsn", dsn, "--mode", "native")
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        status = headend("db", "status", "--dsn", dsn)
        assert "storage mode: native" in status.stdout

        conn = await asyncpg.connect(dsn)
        try:
            await add_operators(conn, o1="admin", o2="cashier,operator,approver,viewer")
        finally:
            await conn.close()
        missing = headend("db", "policy", "--dsn", dsn, "--retention-days", "400")
        assert missing.returncode == 2 and "Missing option '--operator'" in missing.stderr
        no_admin = headend("db", "policy", "--operator", "2", "--dsn", dsn, "--retention-days", "400")
        assert no_admin.returncode == 1 and no_admin.stderr.strip() == (
            "error: operator 2 does not hold the admin role (holds cashier, operator, approver, viewer)"
        )
        kept = headend("db", "policy", "--operator", "1", "--dsn", dsn, "--retention-days", "400")
        assert kept.returncode == 0 and "retention: 400 days" in kept.stdout, kept.stdout + kept.stderr
        conn = await asyncpg.connect(dsn)
        try:
            keep = await conn.fetchval("SELECT value::interval FROM headend_settings WHERE key = 'retention'")
            assert keep == timedelta(days=400)
            audited = await conn.fetch("SELECT actor, details FROM audit_log WHERE action = 'db.policy_set'")
            assert [r["actor"] for r in audited] == ["1"] and '"retention_days": 400' in audited[0]["details"]
        finally:
            await conn.close()

        refused = headend("db", "policy", "--operator", "1", "--dsn", dsn, "--compress-after-days", "10")
        assert refused.returncode == 1
        assert refused.stderr.strip() == (
            "error: compression needs TimescaleDB; this database uses native partitions"
        )
        assert "Traceback" not in refused.stderr
    finally:
        await admin.execute('DROP DATABASE IF EXISTS "headend_cli_native" WITH (FORCE)')
        await admin.close()
