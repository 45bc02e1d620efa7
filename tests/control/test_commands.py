"""Command rows, audit trail and the executor against a real PostgreSQL and the DL/T 645 simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from headend.control.executor import execute
from headend.drivers import Credentials, make_driver
from headend.store.commands import create_command
from headend.store.feecontrol import publish_manual_approval_above
from headend.transport import open_channel
from simulators import BusSpec, SimBus, start_bus

NOW = datetime.now(UTC)


class ProcessDied(BaseException):
    """Stands for the executor process dying right after the relay command went out."""


@asynccontextmanager
async def meter_with_db(dsn: str) -> AsyncIterator[tuple[asyncpg.Connection, SimBus, object, int]]:
    bus = await start_bus(BusSpec(transport="tcp", meters=1, seed=71))
    channel = open_channel(bus.url + "?retries=1&turnaround_ms=300")
    address = bus.meters[0].address
    driver = make_driver("dlt645-2007", channel, address, None, Credentials(2, "000000"))
    conn = await asyncpg.connect(dsn)
    try:
        await publish_manual_approval_above(conn, 1000)  # executor mechanics, not the two-person rule
        channel_id = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('bus1', 'tcp', '127.0.0.1:1') RETURNING id"
        )
        meter_id = await conn.fetchval(
            """INSERT INTO meters (protocol, address, model, channel_id, has_relay)
               VALUES ('dlt645-2007', $1, 'dlt645-generic', $2, true) RETURNING id""",
            address,
            channel_id,
        )
        yield conn, bus, driver, meter_id
    finally:
        await conn.close()
        await channel.close()
        await bus.stop()


async def test_creation_is_idempotent_and_audited(pg_dsn: str) -> None:
    async with meter_with_db(pg_dsn) as (conn, _, _, meter_id):
        first = await create_command(
            conn,
            meter_id=meter_id,
            action="disconnect",
            cause="manual",
            operator="7",
            idempotency_key="arrears:1:flag",
            now=NOW,
        )
        again = await create_command(
            conn,
            meter_id=meter_id,
            action="disconnect",
            cause="manual",
            operator="7",
            idempotency_key="arrears:1:flag",
            now=NOW,
        )
        assert first == again and await conn.fetchval("SELECT count(*) FROM commands") == 1
        assert (
            await conn.fetchval("SELECT action FROM audit_log WHERE entity_id = $1", str(first))
            == "command.pending"
        )
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await conn.execute("UPDATE audit_log SET actor = 'x'")
        with pytest.raises(asyncpg.PostgresError, match="not allowed"):
            await conn.execute("UPDATE commands SET state = 'confirmed' WHERE id = $1", first)


async def test_disconnect_confirmed_with_evidence(pg_dsn: str, daemon_conn: asyncpg.Connection) -> None:
    async with meter_with_db(pg_dsn) as (conn, bus, driver, meter_id):
        cid = await create_command(
            conn,
            meter_id=meter_id,
            action="disconnect",
            cause="manual",
            operator="00000007",
            idempotency_key="manual:1",
            now=NOW,
        )
        assert await execute(daemon_conn, cid, lambda _: driver) == "confirmed"
        row = await conn.fetchrow("SELECT * FROM commands WHERE id = $1", cid)
        assert row["sent_at"] is not None and bus.meters[0].model.relay.open
        assert bus.requests[0x1C] == 1
        states = await conn.fetch(
            "SELECT details->>'to' AS s FROM audit_log WHERE entity_id = $1 ORDER BY id", str(cid)
        )
        assert [r["s"] for r in states] == ["pending", "sent", "confirmed"]


async def test_crash_between_sent_and_confirmed_resumes_without_resending(
    pg_dsn: str, daemon_conn: asyncpg.Connection
) -> None:
    async with meter_with_db(pg_dsn) as (conn, bus, driver, meter_id):
        cid = await create_command(
            conn,
            meter_id=meter_id,
            action="disconnect",
            cause="manual",
            operator="7",
            idempotency_key="arrears:9",
            now=NOW,
        )

        class DiesAfterSend:
            async def switch(self, action: str, *, operator: str) -> object:
                await driver.switch(action, operator=operator)
                raise ProcessDied

        with pytest.raises(ProcessDied):
            await execute(daemon_conn, cid, lambda _: DiesAfterSend())
        assert await conn.fetchval("SELECT state::text FROM commands WHERE id = $1", cid) == "sent"
        assert await execute(daemon_conn, cid, lambda _: driver) == "confirmed"
        assert bus.requests[0x1C] == 1
        row = await conn.fetchrow("SELECT evidence FROM commands WHERE id = $1", cid)
        assert '"resumed": true' in row["evidence"]


async def test_crash_before_bytes_went_out_retries_exactly_once(
    pg_dsn: str, daemon_conn: asyncpg.Connection
) -> None:
    async with meter_with_db(pg_dsn) as (conn, bus, driver, meter_id):
        cid = await create_command(
            conn,
            meter_id=meter_id,
            action="disconnect",
            cause="manual",
            operator="7",
            idempotency_key="arrears:10",
            now=NOW,
        )

        class DiesBeforeSend:
            async def switch(self, action: str, *, operator: str) -> object:
                raise ProcessDied

        with pytest.raises(ProcessDied):
            await execute(daemon_conn, cid, lambda _: DiesBeforeSend())
        assert bus.requests[0x1C] == 0
        # read back: relay still closed, so the command goes back to pending and is sent once
        assert await execute(daemon_conn, cid, lambda _: driver) == "confirmed"
        assert bus.requests[0x1C] == 1 and bus.meters[0].model.relay.open


async def test_keep_power_refusal_fails_the_command_with_the_reason(
    pg_dsn: str, daemon_conn: asyncpg.Connection
) -> None:
    async with meter_with_db(pg_dsn) as (conn, bus, driver, meter_id):
        bus.meters[0].model.relay.keep_power = True
        cid = await create_command(
            conn,
            meter_id=meter_id,
            action="disconnect",
            cause="manual",
            operator="7",
            idempotency_key="arrears:11",
            now=NOW,
        )
        assert await execute(daemon_conn, cid, lambda _: driver) == "failed"
        row = await conn.fetchrow("SELECT last_error, evidence FROM commands WHERE id = $1", cid)
        assert row["last_error"] == "refused: keep-power active" and not bus.meters[0].model.relay.open
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM audit_log WHERE entity_id = $1 AND details->>'to' = 'failed'", str(cid)
            )
            == 1
        )


async def test_expired_command_is_never_sent(pg_dsn: str, daemon_conn: asyncpg.Connection) -> None:
    async with meter_with_db(pg_dsn) as (conn, bus, driver, meter_id):
        cid = await create_command(
            conn,
            meter_id=meter_id,
            action="disconnect",
            cause="manual",
            operator="7",
            idempotency_key="arrears:12",
            now=NOW,
        )
        later = NOW + timedelta(days=2)
        assert await execute(daemon_conn, cid, lambda _: driver, now=lambda: later) == "expired"
        assert bus.requests[0x1C] == 0
