"""Schema behaviour with a real server: command state machine, roles, daily aggregates, upkeep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from headend.store import maintenance
from headend.store.writer import Reading, ReadingWriter
from tests.support.logins import daemon_dsn
from tests.support.operators import add_operators

DAY = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture
async def conn(pg_dsn: str):
    connection = await asyncpg.connect(pg_dsn)
    yield connection
    await connection.close()


async def add_meter(conn: asyncpg.Connection, address: str = "000000000001") -> int:
    channel = await conn.fetchval(
        "INSERT INTO channels (name, kind, address) VALUES ($1, 'tcp', '127.0.0.1:9000')"
        " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        "bus-1",
    )
    return await conn.fetchval(
        "INSERT INTO meters (protocol, address, model, channel_id, has_relay)"
        " VALUES ('dlt645-2007', $1, 'DDZY', $2, true) RETURNING id",
        address,
        channel,
    )


async def test_command_state_machine_and_its_audit_trail(conn: asyncpg.Connection) -> None:
    meter = await add_meter(conn)
    command = await conn.fetchval(
        "INSERT INTO commands (meter_id, action, cause, operator, idempotency_key, expires_at)"
        " VALUES ($1, 'disconnect', 'arrears', 'system', 'arrears:1:2026-03', now() + interval '1 day')"
        " RETURNING id",
        meter,
    )
    async with conn.transaction():
        await conn.execute("SET LOCAL headend.actor = 'daemon@host1'")
        await conn.execute(
            "UPDATE commands SET state = 'sent', attempts = attempts + 1 WHERE id = $1", command
        )
    await conn.execute(
        "UPDATE commands SET state = 'confirmed', evidence = '{\"relay\": \"open\"}' WHERE id = $1", command
    )
    row = await conn.fetchrow("SELECT state::text, sent_at, finished_at FROM commands WHERE id = $1", command)
    assert row["state"] == "confirmed" and row["sent_at"] is not None and row["finished_at"] is not None
    with pytest.raises(asyncpg.CheckViolationError, match="confirmed -> pending is not allowed"):
        await conn.execute("UPDATE commands SET state = 'pending' WHERE id = $1", command)
    audit = await conn.fetch(
        "SELECT actor, action, details->>'from' AS from_state FROM audit_log"
        " WHERE entity = 'command' AND entity_id = $1 ORDER BY id",
        str(command),
    )
    assert [(a["actor"], a["action"], a["from_state"]) for a in audit] == [
        ("system", "command.pending", None),
        ("daemon@host1", "command.sent", "pending"),
        ("system", "command.confirmed", "sent"),
    ]


async def test_one_open_command_per_meter_and_four_eyes_approval(conn: asyncpg.Connection) -> None:
    await add_operators(conn, o1="operator,approver", o2="approver", o3="operator")
    meter = await add_meter(conn)
    insert = (
        "INSERT INTO commands (meter_id, action, cause, operator, expires_at)"
        " VALUES ($1, $2, 'manual', '1', now() + interval '1 hour') RETURNING id"
    )
    await conn.execute(insert, meter, "disconnect")
    with pytest.raises(asyncpg.UniqueViolationError, match="commands_one_open_per_meter"):
        await conn.execute(insert, meter, "reconnect")
    other = await conn.fetchval(insert, await add_meter(conn, "000000000002"), "disconnect")
    approve = "UPDATE commands SET approved_by = $2 WHERE id = $1"
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(approve, other, "1")  # approving one's own command
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="not an active operator with the approver"):
        await conn.execute(approve, other, "3")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="not an active operator with the approver"):
        await conn.execute(approve, other, "System")  # free text is nobody
    await conn.execute(approve, other, "2")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="given once"):
        await conn.execute(approve, other, "1")
    with pytest.raises(asyncpg.CheckViolationError, match="commands_operator_is_actor"):
        await conn.execute(
            insert.replace("'1'", "'op1'"), await add_meter(conn, "000000000003"), "disconnect"
        )


async def test_role_privileges(conn: asyncpg.Connection) -> None:
    meter = await add_meter(conn)
    async with conn.transaction():
        await conn.execute("SET LOCAL ROLE headend_reporting")
        assert await conn.fetchval("SELECT count(*) FROM meters") == 1
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("INSERT INTO audit_log (actor, action) VALUES ('r', 'x')")
    async with conn.transaction():
        await conn.execute("SET LOCAL ROLE headend_daemon")
        await conn.execute(
            "INSERT INTO read_cycles (channel_id, cycle_at, due, succeeded, started_at)"
            " SELECT channel_id, now(), 1, 1, now() FROM meters WHERE id = $1",
            meter,
        )
        await conn.execute("UPDATE accounts SET arrears = true")  # fee control flags arrears
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE accounts SET credit_limit = 1000")
    async with conn.transaction():
        await conn.execute("SET LOCAL ROLE headend_billing")
        await conn.execute("INSERT INTO accounts (number, kind) VALUES ('A-1', 'prepaid')")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM readings")


async def test_daily_aggregate_and_consumption_in_either_mode(
    conn: asyncpg.Connection, pg_dsn: str, tmp_path: Path
) -> None:
    readings = [
        Reading(m, "energy_import_kwh", DAY + timedelta(hours=6 * i), 100.0 * m + i)
        for m in (1, 2)
        for i in range(12)  # three days, four readings a day
    ]
    readings += [
        Reading(1, "energy_import_kwh", DAY + timedelta(hours=7), 99999.0, "suspect"),
        Reading(1, "energy_import_kwh", DAY + timedelta(hours=8), None, "missing"),
        Reading(1, "voltage_a_v", DAY, 230.0),
    ]
    writer = ReadingWriter(daemon_dsn(pg_dsn), spool_dir=tmp_path / "spool")
    await writer.start()
    await writer.submit(readings)
    await maintenance.refresh_daily(conn, DAY, DAY + timedelta(days=3))
    await writer.submit(
        [Reading(1, "energy_import_kwh", DAY + timedelta(days=3, hours=1), 120.0)]
    )  # after refresh
    await writer.close()

    daily = await maintenance.daily_values(conn, [1], "energy_import_kwh", DAY, DAY + timedelta(days=10))
    assert [(r["day"], r["first_value"], r["last_value"], r["max_value"], r["readings"]) for r in daily] == [
        (DAY, 100.0, 103.0, 103.0, 4),
        (DAY + timedelta(days=1), 104.0, 107.0, 107.0, 4),
        (DAY + timedelta(days=2), 108.0, 111.0, 111.0, 4),
        (DAY + timedelta(days=3), 120.0, 120.0, 120.0, 1),  # not refreshed yet: real-time part
    ]
    consumption = await conn.fetch(
        "SELECT day, previous_day, consumption FROM daily_consumption WHERE meter_id = 2 ORDER BY day"
    )
    assert [(r["day"], r["consumption"]) for r in consumption] == [
        (DAY, None),
        (DAY + timedelta(days=1), 4.0),
        (DAY + timedelta(days=2), 4.0),
    ]
    quantities = await conn.fetch("SELECT DISTINCT quantity FROM daily_consumption")
    assert [r["quantity"] for r in quantities] == ["energy_import_kwh"]  # voltage is not consumption


async def test_storage_upkeep_for_the_active_mode(conn: asyncpg.Connection) -> None:
    mode = await maintenance.storage_mode(conn)
    if mode == "native":
        created = await maintenance.ensure_partitions(
            conn, DAY - timedelta(days=400), DAY - timedelta(days=390)
        )
        assert created == 3  # weeks of 2025-01-20, 01-27 and 02-03 (partitions start on Mondays)
        detached = await maintenance.detach_partitions_before(conn, DAY - timedelta(days=300), drop=True)
        assert detached == ["readings_p20250120", "readings_p20250127", "readings_p20250203"] and all(
            n.startswith("readings_p2025") for n in detached
        )
        assert await conn.fetchval("SELECT to_regclass($1)", detached[0]) is None
        await maintenance.set_retention(conn, timedelta(days=30))
        now = datetime.now(UTC)
        await maintenance.run_maintenance(conn, now)
        oldest = await conn.fetchval("SELECT min(starts_at) FROM readings_partitions WHERE NOT detached")
        assert oldest >= now - timedelta(days=37)
        newest = await conn.fetchval("SELECT max(ends_at) FROM readings_partitions")
        assert newest >= now + timedelta(days=14)
        with pytest.raises(RuntimeError, match="needs TimescaleDB"):
            await maintenance.set_compression_after(conn, timedelta(days=10))
    else:
        await maintenance.set_retention(conn, timedelta(days=400))
        await maintenance.set_compression_after(conn, timedelta(days=10))
        jobs = await conn.fetch(
            "SELECT proc_name, config->>'drop_after' AS drop_after,"
            " config->>'compress_after' AS compress_after"
            " FROM timescaledb_information.jobs WHERE hypertable_name = 'readings' ORDER BY proc_name"
        )
        assert [(j["proc_name"], j["drop_after"] or j["compress_after"]) for j in jobs] == [
            ("policy_compression", "10 days"),
            ("policy_retention", "400 days"),
        ]
        with pytest.raises(RuntimeError, match="retention policy"):
            await maintenance.detach_partitions_before(conn, DAY)
