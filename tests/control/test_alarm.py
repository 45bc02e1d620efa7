"""Warning before the cut: the meter's pre-trip alarm (0x1C 2A / 2B) through the daemon's fee control on
a simulated DL/T 645 bus (real PostgreSQL, TCP on 127.0.0.1, 0x1C frames counted by action at the
simulated meters); the driver and the simulator on their own (alarm bit, wrong password, the prepaid
alarm amounts); a Modbus meter refused in one line."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from headend.billing.accounts import AccountError, add_account, set_account
from headend.config import validate_config
from headend.control.executor import execute
from headend.control.manual import ManualCommandError, request_command
from headend.control.safety import SafetySettings
from headend.control.service import run_pass
from headend.drivers import Credentials, MeterRefused, make_driver
from headend.engine.ports import DriverPort
from headend.inventory import import_inventory, read_inventory
from headend.secrets import MeterSecrets
from headend.transport import open_channel
from simulators import BusSpec, SimBus, start_bus
from tests.billing.helpers import assign_from_start
from tests.support import cli
from tests.support.engine import engine_for
from tests.support.operators import add_operators, operator_env

NOTICE = timedelta(hours=12)
GOOD = Credentials(2, "000000")
PAYS_PAYS = "UPDATE balances SET balance = 20 FROM accounts a WHERE a.id = account_id AND a.number = 'PAYS'"


def _config() -> object:
    return validate_config(
        {
            "polling": {"interval": "1h"},
            "backfill": {"enabled": False},
            "clock": {"enabled": False},
            "events": {"enabled": False},
            "metrics": {"port": 0},
            "safety": {
                "no_weekends": False,
                "night_start": "00:00",
                "night_end": "00:00",
                "alarm_before_cut": True,
            },
            "billing": {"notice_period": "12h", "min_arrears": 0},
        },
        "test",
    )


async def _accounts(conn: asyncpg.Connection, bus: SimBus, tmp_path: Path) -> None:
    """Three prepaid accounts, one meter each: LATE and PAYS follow the policy (alarm first), QUIET
    overrides it (no alarm); all three go negative at once."""
    inventory = tmp_path / "inv.toml"
    inventory.write_text(
        f'[[channels]]\nname = "b"\nurl = "{bus.url}"\n'
        + "".join(
            f'\n[[meters]]\nchannel = "b"\nprotocol = "dlt645-2007"\naddress = "{m.address}"\n'
            'model = "dlt645-generic"\nhas_relay = true\n'
            for m in bus.meters
        )
    )
    await import_inventory(conn, read_inventory(inventory))
    await conn.execute(
        "INSERT INTO accounts (number, kind, alarm_before_cut) VALUES ('LATE', 'prepaid', NULL),"
        " ('PAYS', 'prepaid', NULL), ('QUIET', 'prepaid', false)"
    )
    await conn.execute("INSERT INTO balances (account_id, balance) SELECT id, -5 FROM accounts")
    for meter, number in zip(bus.meters, ("LATE", "PAYS", "QUIET"), strict=True):
        await assign_from_start(
            conn,
            await conn.fetchval("SELECT id FROM meters WHERE address = $1", meter.address),
            await conn.fetchval("SELECT id FROM accounts WHERE number = $1", number),
        )


async def _commands(conn: asyncpg.Connection) -> list[tuple[str, str, str, str]]:
    """(account, action, cause, state) of every command, in order."""
    rows = await conn.fetch(
        "SELECT a.number, c.action, c.cause, c.state::text FROM commands c"
        " JOIN accounts a ON a.id = c.account_id ORDER BY c.id"
    )
    return [tuple(r) for r in rows]


async def test_the_meter_warns_a_notice_period_before_the_cut_and_a_payment_silences_it(
    pg_dsn: str, tmp_path: Path
) -> None:
    bus = await start_bus(BusSpec(meters=3, seed=25))
    assert isinstance(bus, SimBus)
    late, pays, quiet = (m.model for m in bus.meters)
    frames = {name: m.control_actions for name, m in zip(("LATE", "PAYS", "QUIET"), bus.meters, strict=True)}
    conn = await asyncpg.connect(pg_dsn)
    await _accounts(conn, bus, tmp_path)
    engine = engine_for(_config(), pg_dsn, tmp_path, DriverPort(MeterSecrets(GOOD)))  # type: ignore[arg-type]
    await engine.start()
    t0 = datetime.now(UTC)
    try:
        # the notice: LATE's and PAYS's meters sound their alarm, confirmed by status word 3 bit 7
        assert [s for _, s in await run_pass(engine, t0)] == ["confirmed", "confirmed"]
        assert late.relay.alarm and pays.relay.alarm and not quiet.relay.alarm
        assert await _commands(conn) == [
            ("LATE", "alarm", "notice", "confirmed"),
            ("PAYS", "alarm", "notice", "confirmed"),
        ]
        evidence = await conn.fetchval("SELECT evidence FROM commands WHERE action = 'alarm' LIMIT 1")
        assert '"pre_trip_alarm": true' in evidence
        # PAYS pays during the notice: its alarm is released (2B), no trip frame
        await conn.execute(PAYS_PAYS)
        assert [s for _, s in await run_pass(engine, t0 + NOTICE / 2)] == ["confirmed"]
        assert not pays.relay.alarm and late.relay.alarm
        # the notice period has run from the notice, not yet from LATE's confirmed alarm: QUIET (no
        # alarm asked) is cut as before, LATE waits for rule `alarm`
        assert [s for _, s in await run_pass(engine, t0 + NOTICE)] == ["confirmed"]
        assert quiet.relay.open and not late.relay.open
        refusal = await conn.fetchrow(
            "SELECT reason, details->>'action' AS action FROM audit_log WHERE action = 'command.refused'"
        )
        assert tuple(refusal) == ("alarm", "disconnect")
        # a notice period after the alarm was confirmed: the cut; the alarm keeps sounding while off
        assert [s for _, s in await run_pass(engine, t0 + NOTICE + timedelta(minutes=5))] == ["confirmed"]
        assert late.relay.open and late.relay.alarm
        # LATE pays: the reconnect first, then (the next pass) the alarm is released
        await conn.execute("UPDATE balances SET balance = 20")
        assert [s for _, s in await run_pass(engine, t0 + 2 * NOTICE)] == ["confirmed", "confirmed"]
        assert not late.relay.open and not quiet.relay.open and late.relay.alarm
        assert [s for _, s in await run_pass(engine, t0 + 2 * NOTICE + timedelta(minutes=1))] == ["confirmed"]
        assert not late.relay.alarm
        assert [s for _, s in await run_pass(engine, t0 + 3 * NOTICE)] == []  # nothing more to do
        # every frame counted at the meters: one alarm and one release each, trips only after the alarm
        assert dict(frames["LATE"]) == {"alarm": 1, "trip": 1, "close": 1, "alarm_release": 1}
        assert dict(frames["PAYS"]) == {"alarm": 1, "alarm_release": 1}
        assert dict(frames["QUIET"]) == {"trip": 1, "close": 1}
        assert [(n, a) for n, a, _, _ in await _commands(conn) if a.startswith("alarm")] == [
            ("LATE", "alarm"),
            ("PAYS", "alarm"),
            ("PAYS", "alarm_release"),
            ("LATE", "alarm_release"),
        ]
        audited = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE entity = 'command' AND details->>'action' LIKE 'alarm%'"
            " AND action = 'command.confirmed'"
        )
        assert audited == 4
    finally:
        await engine.stop()
        await conn.close()
        await bus.stop()


async def _command(conn: asyncpg.Connection, number: str, action: str, cause: str) -> int:
    """As the schema owner: an automatic command of ``action`` on the meter of account ``number``."""
    return int(
        await conn.fetchval(
            "INSERT INTO commands (meter_id, action, cause, operator, expires_at)"
            " SELECT x.meter_id, $2, $3, 'system', $4 FROM meter_assignments x"
            " JOIN accounts a ON a.id = x.account_id WHERE a.number = $1 RETURNING id",
            number,
            action,
            cause,
            datetime.now(UTC) + timedelta(days=30),
        )
    )


async def test_alarms_and_unwarned_cuts_are_gated_when_the_frame_is_about_to_go_out(
    pg_dsn: str, tmp_path: Path, daemon_conn: asyncpg.Connection
) -> None:
    """An automatic alarm made before its customer paid or became protected never goes out; an
    automatic disconnect waits (rule ``alarm``) until a confirmed alarm is a notice period old."""
    bus = await start_bus(BusSpec(transport="tcp", meters=3, seed=26))
    assert isinstance(bus, SimBus)
    channel = open_channel(bus.url)
    drivers = {m.address: make_driver("dlt645-2007", channel, m.address, None, GOOD) for m in bus.meters}
    conn = await asyncpg.connect(pg_dsn)
    await _accounts(conn, bus, tmp_path)
    address_of = dict(await conn.fetch("SELECT id, address FROM meters"))
    settings = SafetySettings(
        night_start=time(0), night_end=time(0), no_weekends=False, alarm_before_cut=True, notice=NOTICE
    )
    t0 = datetime.now(UTC)

    async def run(command_id: int, at: datetime) -> str:
        return await execute(
            daemon_conn, command_id, lambda m: drivers[address_of[m]], now=lambda: at, settings=settings
        )

    try:
        late_alarm = await _command(conn, "LATE", "alarm", "notice")
        paid_alarm = await _command(conn, "PAYS", "alarm", "notice")
        await conn.execute("UPDATE accounts SET protected = true WHERE number = 'LATE'")
        await conn.execute(PAYS_PAYS)
        assert await run(late_alarm, t0) == "cancelled" and await run(paid_alarm, t0) == "cancelled"
        errors = await conn.fetch("SELECT last_error FROM commands WHERE action = 'alarm' ORDER BY id")
        assert [e["last_error"].split(":")[1].strip() for e in errors] == ["protected", "paid"]
        assert sum(m.controls for m in bus.meters) == 0
        # QUIET is in arrears, its account asks for the alarm now, and none sounded
        await conn.execute(
            "UPDATE accounts SET arrears = true, arrears_since = $1, alarm_before_cut = true"
            " WHERE number = 'QUIET'",
            t0,
        )
        cut = await _command(conn, "QUIET", "disconnect", "arrears")
        assert await run(cut, t0) == "pending"
        assert await conn.fetchval("SELECT last_error FROM commands WHERE id = $1", cut) == "waiting: alarm"
        quiet = bus.meters[2]
        await conn.execute("UPDATE commands SET state = 'cancelled' WHERE id = $1", cut)
        alarm = await _command(conn, "QUIET", "alarm", "notice")
        assert await run(alarm, t0) == "confirmed" and quiet.model.relay.alarm
        cut = await _command(conn, "QUIET", "disconnect", "arrears")
        assert await run(cut, t0 + NOTICE - timedelta(seconds=1)) == "pending"  # sounded too briefly
        assert dict(quiet.control_actions) == {"alarm": 1}
        assert await run(cut, t0 + NOTICE) == "confirmed" and quiet.model.relay.open
        assert dict(quiet.control_actions) == {"alarm": 1, "trip": 1}
        waits = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'command.waiting' AND reason = 'alarm'"
        )
        assert waits == 2  # once per command, not once per attempt
    finally:
        await conn.close()
        await channel.close()
        await bus.stop()


async def test_the_simulated_meter_keeps_its_alarm_and_refuses_a_wrong_password() -> None:
    bus = await start_bus(BusSpec(transport="tcp", meters=1, seed=27))
    assert isinstance(bus, SimBus)
    channel = open_channel(bus.url)
    address = bus.meters[0].address
    good = make_driver("dlt645-2007", channel, address, None, GOOD, confirm_poll_s=0.05)
    wrong = make_driver(
        "dlt645-2007",
        channel,
        address,
        None,
        Credentials(2, "123456"),
        confirm_timeout_s=0.3,
        confirm_poll_s=0.05,
    )
    try:
        refused = await wrong.switch("alarm", operator="00000007")
        assert refused.status == "refused" and "password" in refused.reason
        assert not bus.meters[0].model.relay.alarm
        confirmed = await good.switch("alarm", operator="00000007")
        assert confirmed.status == "confirmed" and confirmed.state is not None
        assert confirmed.state.pre_trip_alarm and not confirmed.state.open
        for _ in range(3):  # the alarm stays across reads
            assert (await good.relay_state()).pre_trip_alarm
        assert (await wrong.switch("alarm_release", operator="00000007")).status == "refused"
        assert (await good.relay_state()).pre_trip_alarm
        released = await good.switch("alarm_release", operator="00000007")
        assert released.status == "confirmed" and not (await good.relay_state()).pre_trip_alarm
        assert dict(bus.meters[0].control_actions) == {"alarm": 2, "alarm_release": 2}
    finally:
        await channel.close()
        await bus.stop()


async def test_prepaid_alarm_amounts_are_written_with_the_password_and_read_back() -> None:
    bus = await start_bus(BusSpec(transport="tcp", meters=2, seed=28))
    assert isinstance(bus, SimBus)
    prepaid, plain = bus.meters
    prepaid.model.prepaid_balance = 35.0
    channel = open_channel(bus.url)
    driver = make_driver("dlt645-2007", channel, prepaid.address, None, GOOD)
    try:
        assert await driver.read_alarm_thresholds() == (Decimal("20.00"), Decimal("10.00"))
        await driver.write_alarm_thresholds(Decimal("50"), Decimal("12.5"), operator="00000007")
        assert prepaid.model.alarm_amounts == [50.0, 12.5]
        assert await driver.read_alarm_thresholds() == (Decimal("50.00"), Decimal("12.50"))
        with pytest.raises(ValueError, match="second <= first"):
            await driver.write_alarm_thresholds(Decimal("5"), Decimal("12.5"), operator="00000007")
        wrong = make_driver("dlt645-2007", channel, prepaid.address, None, Credentials(2, "123456"))
        with pytest.raises(MeterRefused, match="password error"):
            await wrong.write_alarm_thresholds(Decimal("60"), Decimal("1"), operator="00000007")
        assert prepaid.model.alarm_amounts == [50.0, 12.5]
        not_prepaid = make_driver("dlt645-2007", channel, plain.address, None, GOOD)
        with pytest.raises(MeterRefused):  # a meter that keeps no money refuses the write
            await not_prepaid.write_alarm_thresholds(Decimal("60"), Decimal("1"), operator="00000007")
    finally:
        await channel.close()
        await bus.stop()


async def test_an_alarm_for_a_modbus_meter_is_refused_in_one_line(pg_dsn: str, tmp_path: Path) -> None:
    inventory = tmp_path / "inv.toml"
    inventory.write_text(
        '[[channels]]\nname = "m"\nurl = "tcp://127.0.0.1:1"\n\n'
        '[[meters]]\nchannel = "m"\nprotocol = "modbus"\naddress = "7"\nname = "breaker-7"\n'
        'model = "hiking_dds238_2_znsr"\nhas_relay = true\n'
    )
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, o7="operator")
        await import_inventory(conn, read_inventory(inventory))
        with pytest.raises(ManualCommandError, match="has no pre-trip alarm"):
            await request_command(
                conn, "breaker-7", "alarm", operator="7", reason="warn", now=datetime.now(UTC)
            )
        result = cli.headend(
            "commands",
            "create",
            "breaker-7",
            "alarm",
            "--operator",
            "7",
            "--reason",
            "warn",
            "--dsn",
            pg_dsn,
            env=operator_env(),
        )
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines() == [
            "error: meter breaker-7 (modbus) has no pre-trip alarm: alarm is not supported"
        ]
        assert await conn.fetchval("SELECT count(*) FROM commands") == 0
    finally:
        await conn.close()


async def test_an_account_asks_for_the_alarm_refuses_it_or_follows_the_policy(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, o9001="admin")
        await add_account(conn, "A-1", "prepaid", operator="9001")
        seen = []
        for value in ("true", "false", "policy"):
            await set_account(conn, "A-1", {"alarm_before_cut": value}, operator="9001")
            seen.append(await conn.fetchval("SELECT alarm_before_cut FROM accounts WHERE number = 'A-1'"))
        assert seen == [True, False, None]
        with pytest.raises(AccountError, match="alarm_before_cut must be true, false or policy"):
            await set_account(conn, "A-1", {"alarm_before_cut": "sometimes"}, operator="9001")
        audited = await conn.fetch(
            "SELECT details->>'alarm_before_cut' AS v FROM audit_log"
            " WHERE action = 'account.changed' ORDER BY id"
        )
        assert [a["v"] for a in audited] == ["true", "false", "policy"]
    finally:
        await conn.close()
