"""``headend db`` end to end: a subprocess against a real server."""

from __future__ import annotations

import subprocess
import sys

import asyncpg

from tests.support.postgres import PgServer


def headend(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headend.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )


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
