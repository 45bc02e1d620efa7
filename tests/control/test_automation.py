"""Automatic runs on PostgreSQL: flag -> one disconnect, refusals logged by rule, payment -> reconnect."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from headend.billing.payments import record_payment
from headend.control.automation import HALT_KEY, resume, run_once
from headend.control.safety import SafetySettings
from tests.billing.helpers import assign_from_start

WEDNESDAY_NOON = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)
WEDNESDAY_NIGHT = datetime(2026, 11, 18, 23, 0, tzinfo=UTC)


async def _fleet(dsn: str, accounts: int) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    channel = await conn.fetchval(
        "INSERT INTO channels (name, kind, address) VALUES ('c', 'tcp', '127.0.0.1:1') RETURNING id"
    )
    for n in range(accounts):
        acc = await conn.fetchval(
            "INSERT INTO accounts (number, kind, credit_limit, protected) VALUES ($1, 'prepaid', 10, $2) "
            "RETURNING id",
            f"A{n}",
            n == 0,
        )
        await conn.execute("INSERT INTO balances (account_id, balance) VALUES ($1, -50)", acc)
        meter = await conn.fetchval(
            "INSERT INTO meters (protocol, address, model, channel_id, has_relay) "
            "VALUES ('dlt645-2007', $1, 'dlt645-generic', $2, true) RETURNING id",
            f"{n:012d}",
            channel,
        )
        await assign_from_start(conn, meter, acc)
    return conn


async def test_flag_creates_one_disconnect_and_payment_reconnects(
    pg_dsn: str, daemon_conn: asyncpg.Connection
) -> None:
    conn = await _fleet(pg_dsn, 2)
    try:
        first = await run_once(daemon_conn, SafetySettings(), WEDNESDAY_NOON)
        assert sorted(first.flagged) == ["A0", "A1"] and len(first.commands) == 1
        assert first.refused == [(1, "protected")]
        second = await run_once(daemon_conn, SafetySettings(), WEDNESDAY_NOON)
        assert second.commands == [] and await conn.fetchval("SELECT count(*) FROM commands") == 1
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM audit_log WHERE action = 'command.refused' AND reason = 'protected'"
            )
            == 1  # audited when the refusal starts, not on every run
        )
        await record_payment(conn, "A1", Decimal("100.00"), "PAY-1", operator="op1")
        await conn.execute("INSERT INTO headend_settings (key, value) VALUES ($1, 'cap.per_hour')", HALT_KEY)
        third = await run_once(daemon_conn, SafetySettings(), WEDNESDAY_NIGHT)
        # the disconnect never went out: it is cancelled, and no needless close follows
        assert third.cleared == ["A1"] and third.commands == [] and third.halted == "cap.per_hour"
        states = dict(await conn.fetch("SELECT action, state::text FROM commands"))
        assert states == {"disconnect": "cancelled"}
    finally:
        await conn.close()


async def test_window_refusal_and_cap_halt(pg_dsn: str, daemon_conn: asyncpg.Connection) -> None:
    conn = await _fleet(pg_dsn, 4)
    try:
        night = await run_once(daemon_conn, SafetySettings(), WEDNESDAY_NIGHT)
        assert [rule for _, rule in night.refused] == [
            "protected",
            "window.night",
            "window.night",
            "window.night",
        ]
        halted = await run_once(daemon_conn, SafetySettings(max_per_run=2), WEDNESDAY_NOON)
        assert halted.halted == "cap.per_run" and halted.commands == []
        assert await conn.fetchval("SELECT count(*) FROM commands") == 0
        assert (
            await conn.fetchval("SELECT reason FROM audit_log WHERE action = 'automation.halted'")
            == "cap.per_run"
        )
        # the halt is latched: a later run within the caps still disconnects nobody until resumed
        latched = await run_once(daemon_conn, SafetySettings(approval_above=2), WEDNESDAY_NOON)
        assert latched.halted == "cap.per_run" and latched.commands == []
        assert await resume(conn, "op1", "checked the arrears list") == "cap.per_run"
        assert await resume(conn, "op1", "again") is None
        assert await conn.fetchval("SELECT actor FROM audit_log WHERE action = 'automation.resumed'") == "op1"
        bulk = await run_once(daemon_conn, SafetySettings(approval_above=2), WEDNESDAY_NOON)
        assert len(bulk.commands) == 3
        assert await conn.fetchval("SELECT bool_and(requires_approval) FROM commands")
    finally:
        await conn.close()
