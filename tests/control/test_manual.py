"""Manual relay commands: `headend commands create` as a real process, executed by the daemon's engine."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from headend.config import validate_config
from headend.control.automation import HALT_KEY
from headend.control.service import run_pass
from headend.drivers import Credentials
from headend.engine.ports import DriverPort
from headend.inventory import import_inventory, read_inventory
from headend.secrets import MeterSecrets
from simulators import BusSpec, start_bus
from tests.support import cli
from tests.support.engine import engine_for
from tests.support.operators import add_operators, operator_env


def headend(dsn: str, *args: str) -> cli.CliResult:
    return cli.headend("commands", *args, "--dsn", dsn, env=operator_env())


async def test_operator_command_is_executed_by_the_daemon_and_refusals_are_precise(
    pg_dsn: str, tmp_path: Path
) -> None:
    bus = await start_bus(BusSpec(meters=2, seed=83))
    served, protected = bus.meters
    inventory = tmp_path / "inv.toml"
    inventory.write_text(
        f'[[channels]]\nname = "b"\nurl = "{bus.url}"\n\n'
        f'[[meters]]\nchannel = "b"\nprotocol = "dlt645-2007"\naddress = "{served.address}"\n'
        'model = "dlt645-generic"\nname = "flat-12"\nhas_relay = true\n\n'
        f'[[meters]]\nchannel = "b"\nprotocol = "dlt645-2007"\naddress = "{protected.address}"\n'
        'model = "dlt645-generic"\nhas_relay = true\nprotected = true\nprotected_reason = "dialysis"\n'
    )
    conn = await asyncpg.connect(pg_dsn)
    await add_operators(conn, o7="operator,approver", o8="approver")
    await import_inventory(conn, read_inventory(inventory))
    config = validate_config(
        {
            "polling": {"interval": "1h"},
            "backfill": {"enabled": False},
            "clock": {"enabled": False},
            "events": {"enabled": False},
            "metrics": {"port": 0},
        },
        "test",
    )
    engine = engine_for(config, pg_dsn, tmp_path, DriverPort(MeterSecrets(Credentials(2, "000000"))))
    await engine.start()
    try:
        created = headend(
            pg_dsn, "create", "flat-12", "disconnect", "--operator", "7", "--reason", "tamper found on site"
        )
        assert created.returncode == 0, created.stderr
        command_id = int(created.stdout.split()[1])
        # a manual disconnect waits for a second operator by default; the creator is not among them
        assert "waits for approval" in created.stdout and "may approve: 8 (" in created.stdout
        assert "7 (" not in created.stdout
        # nothing is switched by the request itself: the daemon does it, confirmed by read-back
        assert not served.model.relay.open and bus.requests[0x1C] == 0
        again = headend(pg_dsn, "create", served.address, "reconnect", "--operator", "7", "--reason", "x")
        assert again.returncode == 1 and f"already has open command {command_id}" in again.stderr
        assert await run_pass(engine, datetime.now(UTC)) == []  # not sent before its approval
        assert bus.requests[0x1C] == 0
        own = headend(pg_dsn, "approve", str(command_id), "--operator", "7")
        assert own.returncode == 1
        approved = headend(pg_dsn, "approve", str(command_id), "--operator", "8")
        assert approved.returncode == 0, approved.stderr
        assert [state for _, state in await run_pass(engine, datetime.now(UTC))] == ["confirmed"]
        assert served.model.relay.open and bus.requests[0x1C] == 1
        row = await conn.fetchrow(
            "SELECT cause, operator, state::text AS state, evidence FROM commands WHERE id = $1", command_id
        )
        assert (row["cause"], row["operator"], row["state"]) == ("manual", "7", "confirmed")
        trail = await conn.fetch(
            "SELECT actor, action, reason FROM audit_log WHERE entity = 'command' "
            "AND entity_id = $1 ORDER BY id",
            str(command_id),
        )
        assert ("7", "command.requested", "tamper found on site") in [tuple(r) for r in trail]
        assert [r["action"] for r in trail][-1] == "command.confirmed"

        refused = headend(
            pg_dsn, "create", protected.address, "disconnect", "--operator", "7", "--reason", "test"
        )
        assert refused.returncode == 1 and "is protected (dialysis)" in refused.stderr
        unknown = headend(pg_dsn, "create", "nobody", "disconnect", "--operator", "7", "--reason", "r")
        assert unknown.returncode == 1 and "no meter named or addressed 'nobody'" in unknown.stderr
        assert await conn.fetchval("SELECT count(*) FROM commands") == 1
    finally:
        await engine.stop()
        await conn.close()
        await bus.stop()


@pytest.mark.long(seconds=25)
async def test_a_sent_command_cannot_be_cancelled_blind(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, o1="operator", o2="operator")
        channel = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('c', 'tcp', '127.0.0.1:1') RETURNING id"
        )
        meter = await conn.fetchval(
            "INSERT INTO meters (protocol, address, model, channel_id, has_relay) "
            "VALUES ('dlt645-2007', '000000000001', 'dlt645-generic', $1, true) RETURNING id",
            channel,
        )
        sent = await conn.fetchval(
            "INSERT INTO commands (meter_id, action, cause, operator, expires_at) "
            "VALUES ($1, 'disconnect', 'manual', '1', now() + interval '1 day') RETURNING id",
            meter,
        )
        await conn.execute("UPDATE commands SET state = 'sent' WHERE id = $1", sent)
        for nobody, why in (("", "is required"), (" ", "is required"), ("op2", "1-8 digits")):
            blank = headend(pg_dsn, "cancel", str(sent), "--operator", nobody, "--reason", "wrong meter")
            assert blank.returncode == 1 and why in blank.stderr and "Traceback" not in blank.stderr
        refused = headend(pg_dsn, "cancel", str(sent), "--operator", "2", "--reason", "wrong meter")
        assert refused.returncode == 1 and "settles it by reading the relay back" in refused.stderr
        assert await conn.fetchval("SELECT state::text FROM commands WHERE id = $1", sent) == "sent"
        await conn.execute("UPDATE commands SET state = 'pending' WHERE id = $1", sent)
        unexplained = [
            headend(pg_dsn, "cancel", str(sent), "--operator", "2"),
            headend(pg_dsn, "cancel", str(sent), "--operator", "2", "--reason", " "),
        ]
        assert [r.returncode for r in unexplained] == [2, 1] and "--reason" in unexplained[1].stderr
        cancelled = headend(pg_dsn, "cancel", str(sent), "--operator", "2", "--reason", "wrong meter")
        assert cancelled.returncode == 0, cancelled.stderr
        assert await conn.fetchval("SELECT state::text FROM commands WHERE id = $1", sent) == "cancelled"
        shown = json.loads(headend(pg_dsn, "show", str(sent)).stdout)
        assert shown["evidence"] == {"cancelled": {"by": "2", "reason": "wrong meter"}}  # an object
        assert shown["last_error"] == "cancelled by 2: wrong meter"
    finally:
        await conn.close()


async def test_resume_lifts_a_latched_cap_halt_and_says_when_there_is_none(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, o1="admin", o2="operator")
        not_admin = headend(pg_dsn, "resume", "--operator", "2", "--reason", "x")
        assert not_admin.returncode == 1 and "does not hold the admin role" in not_admin.stderr
        idle = headend(pg_dsn, "resume", "--operator", "1", "--reason", "x")
        assert idle.returncode == 1 and "not halted" in idle.stderr
        await conn.execute("INSERT INTO headend_settings (key, value) VALUES ($1, 'cap.per_run')", HALT_KEY)
        lifted = headend(pg_dsn, "resume", "--operator", "1", "--reason", "list checked with billing")
        assert lifted.returncode == 0 and "was halted by cap.per_run" in lifted.stdout
        assert await conn.fetchval("SELECT count(*) FROM headend_settings WHERE key = $1", HALT_KEY) == 0
        assert (
            await conn.fetchval("SELECT reason FROM audit_log WHERE action = 'automation.resumed'")
            == "list checked with billing"
        )
    finally:
        await conn.close()
