"""Least privilege with real logins: each group role connects as its own login and does its job, and
none can forge readings, audit rows, approvals, protection or balances."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from headend.billing.accounts import add_account, assign_meter
from headend.billing.adjustments import adjust
from headend.billing.payments import record_payment
from headend.billing.vee import resolve_hold, validate_new
from headend.config import validate_config
from headend.control.automation import HALT_KEY, resume, run_once
from headend.control.executor import execute
from headend.control.manual import request_command
from headend.control.safety import SafetySettings
from headend.control.service import run_pass
from headend.drivers import Credentials, make_driver
from headend.engine.engine import Engine
from headend.engine.ports import DriverPort
from headend.inventory import import_inventory, read_inventory
from headend.operators import authenticate, authenticate_token, hash_password, new_token, token_digest
from headend.secrets import MeterSecrets
from headend.store import migrate as migrations
from headend.store import operators as operator_store
from headend.store.approvals import approve
from headend.store.maintenance import ensure_partitions, run_maintenance
from headend.store.writer import Reading, ReadingWriter
from headend.transport import open_channel
from simulators import BusSpec, start_bus
from tests.billing.helpers import add_reading, assign_from_start
from tests.support.logins import as_login
from tests.support.operators import PASSWORD, add_operators
from tests.support.postgres import PgServer

WEDNESDAY_NOON = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)
DENIED = (asyncpg.InsufficientPrivilegeError,)


async def _fleet(owner: asyncpg.Connection, address: str) -> tuple[int, int]:
    """One prepaid account in arrears (balance -50 from its ledger) with one relay meter; (account, meter)."""
    channel = await owner.fetchval(
        "INSERT INTO channels (name, kind, address) VALUES ('c', 'tcp', '127.0.0.1:1') RETURNING id"
    )
    account = await owner.fetchval(
        "INSERT INTO accounts (number, kind, credit_limit) VALUES ('A1', 'prepaid', 10) RETURNING id"
    )
    await owner.execute(
        "INSERT INTO ledger (account_id, kind, amount, idempotency_key) VALUES ($1, 'charge', -50, 'seed')",
        account,
    )
    await owner.execute("INSERT INTO balances (account_id, balance) VALUES ($1, -50)", account)
    meter = await owner.fetchval(
        "INSERT INTO meters (protocol, address, model, channel_id, has_relay) "
        "VALUES ('dlt645-2007', $1, 'dlt645-generic', $2, true) RETURNING id",
        address,
        channel,
    )
    await assign_from_start(owner, meter, account)
    return account, meter


async def test_the_daemon_login_migrates_nothing_runs_fee_control_and_writes_readings(
    pg_dsn: str, logins: dict[str, str], tmp_path: Path
) -> None:
    assert await migrations.migrate(logins["daemon"]) == []  # up to date: no CREATE needed
    extra = tmp_path / "migrations"
    extra.mkdir()
    for path in migrations.MIGRATIONS_DIR.glob("*.sql"):
        (extra / path.name).write_bytes(path.read_bytes())
    (extra / "0999_more.sql").write_text("CREATE TABLE more (id int);")
    with pytest.raises(migrations.MigrationError, match="run `headend db migrate` as the schema owner"):
        await migrations.migrate(logins["daemon"], directory=extra)

    bus = await start_bus(BusSpec(meters=1, seed=90))
    owner = await asyncpg.connect(pg_dsn)
    daemon = await asyncpg.connect(logins["daemon"])
    channel = open_channel(bus.url)
    try:
        _, meter = await _fleet(owner, bus.meters[0].address)
        report = await run_once(daemon, SafetySettings(), WEDNESDAY_NOON)
        assert report.flagged == ["A1"] and len(report.commands) == 1
        driver = make_driver("dlt645-2007", channel, bus.meters[0].address, secrets=Credentials(2, "000000"))
        state = await execute(daemon, report.commands[0], lambda _m: driver, now=lambda: WEDNESDAY_NOON)
        assert state == "confirmed"
        assert bus.meters[0].model.relay.open
        actors = await owner.fetch("SELECT DISTINCT actor FROM audit_log ORDER BY actor")
        assert [a["actor"] for a in actors] == ["executor", "system"]
        await run_maintenance(daemon, WEDNESDAY_NOON)

        writer = ReadingWriter(logins["daemon"], spool_dir=tmp_path / "spool")
        await writer.start()
        await writer.submit([Reading(meter, "energy_import_kwh", WEDNESDAY_NOON, 12.5)])
        await writer.close()
        assert writer.written == 1
        async with daemon.transaction():  # charges come from the daemon's billing service
            await daemon.execute(
                "INSERT INTO ledger (account_id, kind, amount, idempotency_key)"
                " SELECT id, 'charge', -1, 'c1' FROM accounts"
            )
            await daemon.execute("UPDATE balances SET balance = balance - 1")

        with pytest.raises(DENIED):
            await daemon.execute("UPDATE readings SET value = 0")
        with pytest.raises(DENIED):
            await daemon.execute("DELETE FROM readings")
        with pytest.raises(DENIED, match="operator authenticated on this connection"):
            await daemon.execute("INSERT INTO audit_log (actor, action) VALUES ('1001', 'payment.recorded')")
        with pytest.raises(DENIED, match="not an active operator with the approver role"):
            await daemon.execute("UPDATE commands SET approved_by = '1001'")
        await owner.execute("UPDATE meters SET protected = true")
        with pytest.raises(DENIED, match="permission denied for table meters"):  # 0014: it only reads them
            await daemon.execute("UPDATE meters SET protected = false")
        with pytest.raises(DENIED, match="permission denied for table channels"):
            await daemon.execute(
                "INSERT INTO channels (name, kind, address) VALUES ('x', 'tcp', '127.0.0.1:2')"
            )
        with pytest.raises(DENIED, match="not the sum of its ledger"):
            await daemon.execute("UPDATE balances SET balance = 1000")
        with pytest.raises(DENIED):
            await daemon.execute("SELECT password_hash FROM operators")
    finally:
        await channel.close()
        await daemon.close()
        await owner.close()
        await bus.stop()


async def test_billing_and_reporting_logins_cannot_forge(pg_dsn: str, logins: dict[str, str]) -> None:
    owner = await asyncpg.connect(pg_dsn)
    billing = await asyncpg.connect(logins["billing"])
    reporting = await asyncpg.connect(logins["reporting"])
    try:
        with pytest.raises(DENIED, match="the first one is created with the schema owner's login"):
            await operator_store.add_operator(billing, "77", "me", ["admin"], hash_password("eight-chars"))
        await add_operators(owner, o1001="cashier", o1002="approver,operator", o1003="admin")
        _, meter = await _fleet(owner, "000000000001")
        command = await owner.fetchval(
            "INSERT INTO commands (meter_id, action, cause, operator, requires_approval, expires_at)"
            " VALUES ($1, 'disconnect', 'arrears', 'system', true, now() + interval '1 day') RETURNING id",
            meter,
        )
        # nothing without an authenticated operator
        with pytest.raises(DENIED, match="needs an authenticated operator with the cashier role"):
            await record_payment(billing, "A1", Decimal("5"), "R0", operator="1001")
        with pytest.raises(DENIED):
            await billing.execute(
                "INSERT INTO readings (meter_id, quantity_id, ts, value)"
                " SELECT $1, id, now(), 1 FROM quantities LIMIT 1",
                meter,
            )
        with pytest.raises(DENIED, match="only the daemon writes as a machine actor"):
            await billing.execute(
                "INSERT INTO audit_log (actor, action) VALUES ('system', 'command.approved')"
            )
        with pytest.raises(DENIED, match=r"cancelling command .* needs an authenticated operator"):
            await billing.execute("SELECT set_config('headend.actor', '1002', false)")
            await billing.execute("UPDATE commands SET state = 'cancelled' WHERE id = $1", command)
        await billing.execute("SELECT set_config('headend.actor', '', false)")
        with pytest.raises(DENIED, match="needs an authenticated operator with the admin role"):
            await operator_store.add_operator(billing, "77", "me", ["admin"], hash_password("eight-chars"))

        with pytest.raises(DENIED, match=r"changing the inventory \(channels\) needs an authenticated"):
            await billing.execute(
                "INSERT INTO channels (name, kind, address) VALUES ('d', 'tcp', '127.0.0.1:3')"
            )

        # a cashier pays; the rows carry the cashier and nobody else
        await authenticate(billing, "1001", PASSWORD, "cashier")
        with pytest.raises(DENIED, match=r"changing the inventory \(meters\) needs .* the admin role"):
            await billing.execute("UPDATE meters SET has_relay = false")
        outcome = await record_payment(billing, "A1", Decimal("70"), "R1", operator="1001")
        assert outcome.recorded and outcome.balance == Decimal("20")
        with pytest.raises(DENIED, match="operator authenticated on this connection"):
            await record_payment(billing, "A1", Decimal("5"), "R2", operator="1003")
        with pytest.raises(DENIED, match="not the sum of its ledger"):
            await billing.execute("UPDATE balances SET balance = 1000000")
        with pytest.raises(DENIED):
            await billing.execute("UPDATE ledger SET amount = 1000000")
        with pytest.raises(DENIED, match="clearing protected"):
            await owner.execute("UPDATE accounts SET protected = true")
            await billing.execute("UPDATE accounts SET protected = false")
        with pytest.raises(DENIED, match="not an active operator with the approver role"):
            await billing.execute("UPDATE commands SET approved_by = '1001' WHERE id = $1", command)
        with pytest.raises(DENIED, match="operator authenticated on this connection"):
            await billing.execute("UPDATE commands SET approved_by = '1002' WHERE id = $1", command)
        with pytest.raises(DENIED, match="waits for an approver"):
            await billing.execute("UPDATE commands SET state = 'sent' WHERE id = $1", command)
        with pytest.raises(DENIED, match="fixed at creation"):
            await billing.execute("UPDATE commands SET requires_approval = false WHERE id = $1", command)

        # an approver approves another's command once; an admin may clear protection
        await authenticate(billing, "1002", PASSWORD, "approver")
        await billing.execute("UPDATE commands SET approved_by = '1002' WHERE id = $1", command)
        await owner.execute("INSERT INTO headend_settings (key, value) VALUES ($1, 'cap.per_run')", HALT_KEY)
        with pytest.raises(DENIED, match="needs an authenticated operator with the admin role"):
            await resume(billing, "1002", "not mine to lift")
        await authenticate(billing, "1003", PASSWORD, "admin")
        await billing.execute("UPDATE accounts SET protected = false")
        await billing.execute("UPDATE meters SET has_relay = false")  # an admin changes the inventory
        assert await owner.fetchval("SELECT count(*) FROM meters WHERE has_relay") == 0
        assert await resume(billing, "1003", "arrears list checked") == "cap.per_run"
        assert await owner.fetchval("SELECT approved_by FROM commands WHERE id = $1", command) == "1002"

        assert await reporting.fetchval("SELECT count(*) FROM payments") == 1
        for statement in (
            "INSERT INTO audit_log (actor, action) VALUES ('system', 'x')",
            "UPDATE balances SET balance = 0",
            "SELECT password_hash FROM operators",
            "SELECT * FROM headend_sign_in('1001', 'x')",
            "SELECT * FROM operator_lockouts",
        ):
            with pytest.raises(DENIED):
                await reporting.execute(statement)
    finally:
        for conn in (billing, reporting, owner):
            await conn.close()


async def test_the_daemon_engine_runs_fee_control_under_its_login(
    pg_dsn: str, logins: dict[str, str], tmp_path: Path
) -> None:
    """`headend run`'s engine as a login in headend_daemon: automation and a desk operator's command."""
    bus = await start_bus(BusSpec(meters=2, seed=91))
    owner = await asyncpg.connect(pg_dsn)
    desk = await asyncpg.connect(logins["billing"])
    inventory = tmp_path / "inv.toml"
    inventory.write_text(
        f'[[channels]]\nname = "b"\nurl = "{bus.url}"\n'
        + "".join(
            f'\n[[meters]]\nchannel = "b"\nprotocol = "dlt645-2007"\naddress = "{m.address}"\n'
            'model = "dlt645-generic"\nhas_relay = true\n'
            for m in bus.meters
        )
    )
    config = validate_config(
        {
            "polling": {"interval": "1h"},
            "backfill": {"enabled": False},
            "clock": {"enabled": False},
            "events": {"enabled": False},
            "metrics": {"port": 0},
            "safety": {"no_weekends": False, "night_start": "00:00", "night_end": "00:00"},
            "billing": {"notice_period": 0},  # disconnect without the default notice
        },
        "test",
    )
    engine = Engine(
        config,
        logins["daemon"],
        ReadingWriter(logins["daemon"], spool_dir=tmp_path / "spool"),
        DriverPort(MeterSecrets(Credentials(2, "000000"))),
    )
    try:
        await import_inventory(owner, read_inventory(inventory))
        await add_operators(owner, o1007="operator", o1008="approver")
        account = await owner.fetchval(
            "INSERT INTO accounts (number, kind, credit_limit) VALUES ('A', 'prepaid', 0) RETURNING id"
        )
        await owner.execute(
            "INSERT INTO ledger (account_id, kind, amount, idempotency_key) VALUES ($1, 'charge', -50, 's')",
            account,
        )  # above [billing] min_arrears
        await owner.execute("INSERT INTO balances (account_id, balance) VALUES ($1, -50)", account)
        await assign_from_start(
            owner,
            await owner.fetchval("SELECT id FROM meters WHERE address = $1", bus.meters[0].address),
            account,
        )
        await engine.start()
        now = datetime.now(UTC)
        assert [state for _, state in await run_pass(engine, now)] == ["confirmed"]
        assert bus.meters[0].model.relay.open

        await authenticate(desk, "1007", PASSWORD, "operator")
        command = await request_command(
            desk, bus.meters[1].address, "disconnect", operator="1007", reason="site visit", now=now
        )
        assert await run_pass(engine, datetime.now(UTC)) == []  # waits for a second operator
        await authenticate(desk, "1008", PASSWORD, "approver")
        assert await approve(desk, [command], "1008", "checked") == [command]
        assert await run_pass(engine, datetime.now(UTC)) == [(command, "confirmed")]
        assert bus.meters[1].model.relay.open
        trail = await owner.fetch(
            "SELECT actor, action FROM audit_log WHERE entity = 'command' AND entity_id = $1 ORDER BY id",
            str(command),
        )
        assert [tuple(t) for t in trail] == [
            ("1007", "command.pending"),
            ("1007", "command.requested"),
            ("1008", "command.approved"),
            ("executor", "command.sent"),
            ("executor", "command.confirmed"),
        ]
    finally:
        await engine.stop()
        await desk.close()
        await owner.close()
        await bus.stop()


async def test_billing_records_are_written_by_their_roles_only(pg_dsn: str, logins: dict[str, str]) -> None:
    """Billing's tables (0007) under the operators' rules (0008, 0010): the daemon validates and opens
    holds but resolves nothing and changes no reading's value; a hold is resolved once by a signed-in
    admin; adjustments are a cashier's; assignments an admin's; the ledger stays append-only."""
    t0 = datetime(2026, 11, 2, tzinfo=UTC)
    owner = await asyncpg.connect(pg_dsn)
    daemon = await asyncpg.connect(logins["daemon"])
    billing = await asyncpg.connect(logins["billing"])
    reporting = await asyncpg.connect(logins["reporting"])
    try:
        await add_operators(owner, o1101="admin", o1102="cashier")
        _, meter = await _fleet(owner, "000000000001")
        await ensure_partitions(owner, t0 - timedelta(days=1), t0 + timedelta(days=2))
        await add_reading(owner, meter, t0, 100.0)
        await add_reading(owner, meter, t0 + timedelta(hours=1), 50.0)  # a swap, not a rollover

        # the daemon's billing pass validates, marks the reading suspect and opens the hold
        report = await validate_new(daemon)
        assert [meter_id for meter_id, _ in report.holds] == [meter]
        hold = await owner.fetchval("SELECT id FROM vee_holds WHERE resolved_at IS NULL")
        assert await daemon.fetch("SELECT * FROM meter_assignments, register_restarts") == []
        with pytest.raises(DENIED):  # no grant on restarts, and no operator on the daemon's connection
            await resolve_hold(daemon, hold, "replaced", operator="1101", reason="swap", final=100, initial=0)
        for statement in (
            "UPDATE readings SET value = 0",
            "DELETE FROM vee_holds",
            "UPDATE vee_holds SET reason = 'nothing'",
            "INSERT INTO ledger (account_id, kind, amount, idempotency_key) SELECT id, 'adjustment', 9, 'x'"
            " FROM accounts",
            "UPDATE accounts SET credit_limit = 1000",
            "INSERT INTO tariffs (name, kind) VALUES ('free', 'flat')",
        ):
            with pytest.raises(DENIED):
                await daemon.execute(statement)

        # a cashier adjusts (ledger and balance in step) but resolves and assigns nothing
        with pytest.raises(DENIED, match="admin role"):
            await resolve_hold(
                billing, hold, "replaced", operator="1102", reason="swap", final=100, initial=0
            )
        await authenticate(billing, "1102", PASSWORD, "cashier")
        assert await adjust(
            billing, "A1", Decimal("5"), reference="ADJ-1", reason="refund", operator="1102"
        ) == (
            True,
            Decimal("-45.00"),
        )
        with pytest.raises(DENIED, match="admin role"):
            await resolve_hold(
                billing, hold, "replaced", operator="1102", reason="swap", final=100, initial=0
            )
        with pytest.raises(DENIED, match="admin role"):
            await assign_meter(billing, "000000000001", "A1", at=t0, operator="1102", reason="move")
        with pytest.raises(DENIED):
            await billing.execute("UPDATE readings SET quality = 'actual'")
        with pytest.raises(DENIED):
            await billing.execute("UPDATE ledger SET amount = 500 WHERE idempotency_key = 'adjust:ADJ-1'")

        # an admin resolves the hold once, under their own id, and moves the meter to a new tenant
        await authenticate(billing, "1101", PASSWORD, "admin")
        with pytest.raises(DENIED, match="cashier role"):
            await adjust(billing, "A1", Decimal("5"), reference="ADJ-2", reason="mine", operator="1101")
        await resolve_hold(billing, hold, "replaced", operator="1101", reason="swap", final=100, initial=0)
        resolved = await owner.fetchrow("SELECT resolution, resolved_by FROM vee_holds WHERE id = $1", hold)
        assert tuple(resolved) == ("replaced", "1101")
        assert await owner.fetchval("SELECT count(*) FROM register_restarts WHERE operator = '1101'") == 1
        with pytest.raises(DENIED, match="resolved once"):
            await billing.execute("UPDATE vee_holds SET resolution = 'accepted' WHERE id = $1", hold)
        await add_account(billing, "A2", "prepaid", operator="1101")
        at = t0 + timedelta(days=1)
        await assign_meter(
            billing, "000000000001", "A2", at=at, operator="1101", reason="tenant change", reading=Decimal(60)
        )
        assert await owner.fetchval(
            "SELECT value FROM readings WHERE meter_id = $1 AND ts = $2", meter, at
        ) == pytest.approx(60)
        with pytest.raises(DENIED, match="only its end"):
            await billing.execute("UPDATE meter_assignments SET account_id = (SELECT min(id) FROM accounts)")
        with pytest.raises(DENIED):
            await billing.execute("UPDATE readings SET value = 1 WHERE meter_id = $1", meter)

        command = await owner.fetchval(
            "INSERT INTO commands (meter_id, action, cause, operator, expires_at)"
            " VALUES ($1, 'reconnect', 'payment', 'system', now() + interval '1 day') RETURNING id",
            meter,
        )
        for conn in (billing, daemon):
            with pytest.raises(DENIED, match="fixed at creation"):
                await conn.execute(
                    "UPDATE commands SET reconnect_mode = 'close_allowed' WHERE id = $1", command
                )
        assert await reporting.fetchval("SELECT count(*) FROM vee_holds") == 1
        for statement in (
            "INSERT INTO meter_assignments (meter_id, account_id, effective_from, operator)"
            " SELECT meter_id, account_id, now(), '1101' FROM meter_assignments",
            "UPDATE vee_holds SET resolved_by = NULL",
            "SELECT headend_add_manual_reading(1, now(), 1, 'x')",
        ):
            with pytest.raises(DENIED):
                await reporting.execute(statement)
        balances = await owner.fetch(
            "SELECT b.balance, (SELECT sum(amount) FROM ledger l WHERE l.account_id = b.account_id) AS total"
            " FROM balances b"
        )
        assert all(b["balance"] == b["total"] for b in balances)
    finally:
        for conn in (billing, reporting, daemon, owner):
            await conn.close()


async def test_a_token_session_acts_with_the_tokens_roles_only_in_the_database(
    pg_dsn: str, logins: dict[str, str]
) -> None:
    """The token's role subset is enforced by the database, not only by the CLI: an admin's viewer
    token cannot add an operator even through raw SQL on the billing login."""
    owner = await asyncpg.connect(pg_dsn)
    await add_operators(owner, o1001="admin,viewer")
    token = new_token()
    expires = datetime.now(UTC) + timedelta(days=1)
    await owner.execute(
        "INSERT INTO operator_tokens (operator_id, label, roles, digest, created_by, expires_at)"
        " VALUES ('1001', 'dashboard', ARRAY['viewer'], $1, 'test', $2)",
        token_digest(token),
        expires,
    )
    by_token = await asyncpg.connect(logins["billing"])
    by_password = await asyncpg.connect(logins["billing"])
    new_hash = hash_password("a-new-operator-pw")
    try:
        signed = await authenticate_token(by_token, "1001", token, None)
        assert signed.roles == ("viewer",)
        with pytest.raises(DENIED, match="needs an authenticated operator with the admin role"):
            await by_token.execute("SELECT headend_operator_add('1009', 'X', ARRAY['viewer'], $1)", new_hash)
        await authenticate(by_password, "1001", PASSWORD, "admin")
        await by_password.execute("SELECT headend_operator_add('1009', 'X', ARRAY['viewer'], $1)", new_hash)
        assert await owner.fetchval("SELECT created_by FROM operators WHERE id = '1009'") == "1001"
        for statement in ("SELECT digest FROM operator_tokens", "DELETE FROM operator_tokens"):
            with pytest.raises(DENIED):
                await by_password.execute(statement)
    finally:
        for conn in (by_token, by_password, owner):
            await conn.close()


async def test_a_schema_owner_that_is_not_a_superuser_migrates_and_desk_operators_sign_in(
    pg_server: PgServer,
) -> None:
    """docs/operations.md's owner need not be a superuser, nor hold pg_read_all_settings or
    pg_read_all_stats: it migrates its database, and an operator signs in on the desk login."""
    suffix = uuid.uuid4().hex[:8]
    owner_role, desk_role, database = f"owner_{suffix}", f"desk_{suffix}", f"owned_{suffix}"
    admin = await asyncpg.connect(pg_server.admin_dsn)
    try:
        await admin.execute(f'CREATE ROLE "{owner_role}" LOGIN CREATEROLE')
        await admin.execute(f'CREATE DATABASE "{database}" OWNER "{owner_role}"')
        owner_dsn = as_login(pg_server.dsn(database), owner_role)
        assert "0018_assignments_are_the_truth" in await migrations.migrate(owner_dsn)
        owner = await asyncpg.connect(owner_dsn)
        try:
            assert not await owner.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            await owner.execute(f'CREATE ROLE "{desk_role}" LOGIN IN ROLE headend_billing')
            await add_operators(owner, o1001="admin")
        finally:
            await owner.close()
        desk = await asyncpg.connect(as_login(pg_server.dsn(database), desk_role))
        try:
            await authenticate(desk, "1001", PASSWORD, "admin")
            assert await desk.fetchval("SELECT headend_current_operator()") == "1001"
        finally:
            await desk.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for role in (desk_role, owner_role):
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()
