"""Fee control that cannot wedge: failures isolated per meter, dry runs keep the episode open, refusals
audited once per change, held meters and small debts never disconnected (real PostgreSQL)."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal

import asyncpg

from headend.billing.payments import record_payment
from headend.control.automation import run_once
from headend.control.executor import execute
from headend.control.manual import request_command
from headend.control.safety import SafetySettings
from tests.control.test_automation import WEDNESDAY_NIGHT, WEDNESDAY_NOON, _fleet


class NoDriver:
    """A relay that must not be reached."""

    async def switch(self, action: str, *, operator: str) -> None:
        raise AssertionError("a dry run must not reach a meter")

    async def relay_state(self) -> None:
        raise AssertionError("a dry run must not reach a meter")


async def _refusal_audits(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'command.refused'"))


async def test_a_conflicting_command_on_one_meter_does_not_stop_the_others(
    pg_dsn: str, daemon_conn: asyncpg.Connection
) -> None:
    conn = await _fleet(pg_dsn, 3)  # A0 protected; A1, A2 in arrears
    try:
        await request_command(
            conn, "000000000001", "reconnect", operator="7", reason="field visit", now=WEDNESDAY_NOON
        )
        report = await run_once(daemon_conn, SafetySettings(), WEDNESDAY_NOON)
        assert [(stage, meter) for stage, meter, _ in report.failures] == [("command", "2")]
        assert "open command" in report.failures[0][2]
        created = await conn.fetch("SELECT meter_id, action FROM commands WHERE operator = 'system'")
        assert [tuple(r) for r in created] == [(3, "disconnect")]  # A2 was not held up by A1's conflict
        # A2 pays while A1's conflict persists: A2's unsent disconnect is cancelled in the very next run
        # (and, as it never went out, no reconnect follows)
        await record_payment(conn, "A2", Decimal("100.00"), "PAY-2", operator="cashier")
        again = await run_once(daemon_conn, SafetySettings(), WEDNESDAY_NOON)
        assert len(again.failures) == 1 and again.cleared == ["A2"] and again.commands == []
        rows = await conn.fetch("SELECT action, state::text FROM commands WHERE meter_id = 3")
        assert [tuple(r) for r in rows] == [("disconnect", "cancelled")]
    finally:
        await conn.close()


async def test_dry_run_leaves_the_arrears_episode_open(pg_dsn: str, daemon_conn: asyncpg.Connection) -> None:
    conn = await _fleet(pg_dsn, 2)
    try:
        dry = await run_once(daemon_conn, SafetySettings(dry_run=True), WEDNESDAY_NOON)
        assert len(dry.commands) == 1

        state = await execute(daemon_conn, dry.commands[0], lambda _: NoDriver(), now=lambda: WEDNESDAY_NOON)
        assert state == "cancelled"
        assert (await run_once(daemon_conn, SafetySettings(dry_run=True), WEDNESDAY_NOON)).commands == []
        real = await run_once(daemon_conn, SafetySettings(), WEDNESDAY_NOON)  # dry run switched off
        assert len(real.commands) == 1
        row = await conn.fetchrow("SELECT dry_run, state::text FROM commands WHERE id = $1", real.commands[0])
        assert tuple(row) == (False, "pending")
    finally:
        await conn.close()


async def test_refusals_are_audited_once_per_state_change(
    pg_dsn: str, daemon_conn: asyncpg.Connection
) -> None:
    conn = await _fleet(pg_dsn, 2)  # A0 protected, A1 not
    try:
        for _ in range(5):
            await run_once(daemon_conn, SafetySettings(), WEDNESDAY_NIGHT)
        assert await _refusal_audits(conn) == 2  # protected (A0) + window.night (A1), once each
        day = await run_once(daemon_conn, SafetySettings(), WEDNESDAY_NOON)  # A1's refusal ends: command
        assert len(day.commands) == 1 and await _refusal_audits(conn) == 2
        assert await conn.fetchval("SELECT count(*) FROM fee_control_refusals") == 1
    finally:
        await conn.close()


async def test_a_meter_with_held_data_is_not_disconnected(
    pg_dsn: str, daemon_conn: asyncpg.Connection
) -> None:
    conn = await _fleet(pg_dsn, 3)  # balances -50, credit limit 10
    try:
        await conn.execute(
            "INSERT INTO quantities (name) VALUES ('energy_import_kwh') ON CONFLICT DO NOTHING"
        )
        await conn.execute(
            "INSERT INTO vee_holds (meter_id, quantity_id, rule, reason, first_ts)"
            " SELECT 2, id, 'decrease', 'register decreased 4345.04 -> 1520.89', $1 FROM quantities"
            " WHERE name = 'energy_import_kwh'",
            WEDNESDAY_NOON,
        )
        report = await run_once(daemon_conn, SafetySettings(), WEDNESDAY_NOON, minimum=Decimal("10"))
        assert sorted(report.flagged) == ["A0", "A1", "A2"]
        assert report.refused == [(1, "protected"), (2, "hold.suspect_data")]
        assert [r["meter_id"] for r in await conn.fetch("SELECT meter_id FROM commands")] == [3]
        reason = await conn.fetchval(
            "SELECT details->>'reason' FROM audit_log WHERE action = 'command.refused' AND entity_id = '2'"
        )
        assert "4345.04 -> 1520.89" in reason
    finally:
        await conn.close()


async def test_the_minimum_arrears_amount_holds_off_tiny_debts(
    pg_dsn: str, daemon_conn: asyncpg.Connection
) -> None:
    conn = await _fleet(pg_dsn, 2)
    try:
        await conn.execute("UPDATE accounts SET credit_limit = 0")
        await conn.execute("UPDATE balances SET balance = -0.01")
        quiet = await run_once(daemon_conn, SafetySettings(), WEDNESDAY_NOON, minimum=Decimal("10"))
        assert quiet.flagged == [] and quiet.commands == []
        await conn.execute("UPDATE balances SET balance = -10")
        loud = await run_once(daemon_conn, SafetySettings(), WEDNESDAY_NOON, minimum=Decimal("10"))
        assert sorted(loud.flagged) == ["A0", "A1"]
    finally:
        await conn.close()


def test_defaults_a_utility_accepts() -> None:
    from headend.config import validate_config

    config = validate_config({}, "default")
    assert config.billing.notice_period == 3 * 86400 and config.billing.min_arrears == Decimal("10")
    assert config.safety.reconnect_mode == "close"
    assert WEDNESDAY_NOON.tzinfo is UTC
