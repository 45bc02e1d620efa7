"""The shared runners use the least-privilege logins of docs/operations.md, never the superuser that
made the test database: the daemon process and the in-process engine hold ``headend_app`` sessions,
an operator's CLI command writes as ``headend_desk``, and ``billing bill`` as ``headend_app``. If a
runner fell back to the superuser, a missing grant would pass unseen; these tests fail instead."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg

from headend.config import validate_config
from tests.support.cli import headend
from tests.support.daemons import Daemon
from tests.support.engine import engine_for
from tests.support.logins import DAEMON_LOGIN, DESK_LOGIN, as_login
from tests.support.operators import add_operators, operator_env
from tests.support.ports import free_port
from tests.support.postgres import PgServer
from tests.support.waiting import wait_until

SESSIONS = """
SELECT a.usename::text AS login, r.rolsuper FROM pg_stat_activity a JOIN pg_roles r ON r.rolname = a.usename
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
"""

# Test-only probe: which login wrote each audit row (the audit rows name the operator, not the login).
PROBE = """
CREATE TABLE probe_writers (action text, login text, superuser boolean);
CREATE FUNCTION probe_writer() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO probe_writers SELECT NEW.action, session_user, rolsuper FROM pg_roles
    WHERE rolname = session_user;
    RETURN NEW;
END $$;
CREATE TRIGGER probe_writer AFTER INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION probe_writer();
"""


async def other_sessions(owner_dsn: str) -> set[tuple[str, bool]]:
    """(login, superuser) of every other session on the test database."""
    conn = await asyncpg.connect(owner_dsn)
    try:
        return {(row["login"], row["rolsuper"]) for row in await conn.fetch(SESSIONS)}
    finally:
        await conn.close()


async def test_the_daemon_process_runs_under_the_daemon_login(pg_dsn: str, tmp_path: Path) -> None:
    config = tmp_path / "headend.toml"
    port = free_port()
    config.write_text(
        f'[database]\ndsn = "{pg_dsn}"\nspool_dir = "{tmp_path / "spool"}"\n'
        f'[metrics]\nport = {port}\n[logging]\nformat = "json"\n'
    )
    daemon = await Daemon.start(config, tmp_path / "state", port)
    try:
        await daemon.wait_logged("engine started")
        await wait_until(lambda: other_sessions(pg_dsn), 30, "the daemon's database sessions")
        assert await other_sessions(pg_dsn) == {(DAEMON_LOGIN, False)}
    finally:
        await daemon.close()


async def test_the_in_process_engine_runs_under_the_daemon_login(pg_dsn: str, tmp_path: Path) -> None:
    engine = engine_for(
        validate_config({"polling": {"interval": "1h"}, "metrics": {"port": 0}}, "test"), pg_dsn, tmp_path
    )
    await engine.start()
    try:
        await wait_until(lambda: other_sessions(pg_dsn), 30, "the engine's database sessions")
        assert await other_sessions(pg_dsn) == {(DAEMON_LOGIN, False)}
    finally:
        await engine.stop()


async def test_operator_commands_write_as_the_desk_and_billing_runs_as_the_daemon(pg_dsn: str) -> None:
    owner = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(owner, o2001="admin,cashier")  # audited as the owner, before the probe
        await owner.execute(PROBE)
    finally:
        await owner.close()
    added = headend(
        "accounts",
        "add",
        "A-1",
        "--kind",
        "prepaid",
        "--operator",
        "2001",
        "--dsn",
        pg_dsn,
        env=operator_env(),
    )
    assert added.returncode == 0, added.stderr
    period = ("--from", "2026-11-01T00:00:00+00:00", "--to", "2026-12-01T00:00:00+00:00")
    billed = headend("billing", "bill", *period, "--operator", "2001", "--dsn", pg_dsn, env=operator_env())
    assert billed.returncode == 0, billed.stderr
    owner = await asyncpg.connect(pg_dsn)
    try:
        writers = {
            (r["action"], r["login"], r["superuser"]) for r in await owner.fetch("TABLE probe_writers")
        }
    finally:
        await owner.close()
    assert ("account.created", DESK_LOGIN, False) in writers
    assert {(login, superuser) for _, login, superuser in writers} <= {
        (DESK_LOGIN, False),
        (DAEMON_LOGIN, False),
    }
    assert any(login == DAEMON_LOGIN for _, login, _ in writers), writers


async def test_db_migrate_runs_as_an_owner_that_is_not_a_superuser(pg_server: PgServer) -> None:
    """docs/operations.md: the login that owns the database (CREATEROLE, no superuser) runs
    ``headend db migrate``; only the TimescaleDB extension, where the server preloads it, is a
    superuser's to create first."""
    suffix = uuid.uuid4().hex[:8]
    owner_role, database = f"owner_{suffix}", f"owned_{suffix}"
    admin = await asyncpg.connect(pg_server.admin_dsn)
    try:
        await admin.execute(f'CREATE ROLE "{owner_role}" LOGIN CREATEROLE')
        await admin.execute(f'CREATE DATABASE "{database}" OWNER "{owner_role}"')
        if "timescaledb" in await admin.fetchval("SELECT current_setting('shared_preload_libraries')"):
            in_database = await asyncpg.connect(pg_server.dsn(database))
            try:
                await in_database.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            finally:
                await in_database.close()
        owner_dsn = as_login(pg_server.dsn(database), owner_role)
        migrated = headend("db", "migrate", "--dsn", owner_dsn)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        assert "applied 0037_documented_logins_grants" in migrated.stdout
        assert headend("db", "migrate", "--dsn", owner_dsn).stdout.strip() == "up to date"
        assert not await admin.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = $1", owner_role)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "{owner_role}"')
        await admin.close()
