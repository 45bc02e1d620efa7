"""Rules are checked when the frame goes out, not only when the command was made: approved automatic
disconnects whose customer became protected, got a VEE hold, paid, or reached the night window, and a
manual one whose meter changed account, run through the daemon's fee-control pass (real PostgreSQL,
the daemon's engine, a simulated DL/T 645 bus that counts every 0x1C frame)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg

from headend.billing.payments import record_payment
from headend.config import validate_config
from headend.control.executor import execute
from headend.control.manual import request_command
from headend.control.safety import settings_from_config
from headend.control.service import run_pass
from headend.drivers import Credentials, make_driver
from headend.engine.engine import Engine
from headend.engine.ports import DriverPort
from headend.inventory import import_inventory, read_inventory
from headend.secrets import MeterSecrets
from headend.store.approvals import approve
from headend.store.writer import ReadingWriter
from headend.transport import open_channel
from simulators import BusSpec, SimBus, start_bus
from tests.billing.helpers import assign_from_start
from tests.support.logins import daemon_dsn
from tests.support.operators import add_operators

DAY = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
NIGHT = DAY.replace(hour=23)
CONFIG = validate_config(
    {
        "polling": {"interval": "1h"},
        "backfill": {"enabled": False},
        "clock": {"enabled": False},
        "events": {"enabled": False},
        "metrics": {"port": 0},
        "safety": {
            "no_weekends": False,
            "night_start": "22:00",
            "night_end": "06:00",
            "timezone": "UTC",
            "approval_above": 0,  # every automatic disconnect waits for a second operator
        },
        "billing": {"notice_period": 0, "min_arrears": 0},
    },
    "test",
)


@dataclass
class Fleet:
    bus: SimBus
    conn: asyncpg.Connection
    engine: Engine
    accounts: list[int]


@asynccontextmanager
async def fleet(pg_dsn: str, tmp_path: Path, meters: int, seed: int) -> AsyncIterator[Fleet]:
    """``meters`` relay meters on a simulated bus, each on a prepaid account 50 in debt, the
    daemon's engine started, and approver 1002."""
    bus = await start_bus(BusSpec(meters=meters, seed=seed))
    assert isinstance(bus, SimBus)
    text = f'[[channels]]\nname = "b"\nurl = "{bus.url}"\n\n'
    for meter in bus.meters:
        text += (
            f'[[meters]]\nchannel = "b"\nprotocol = "dlt645-2007"\naddress = "{meter.address}"\n'
            'model = "dlt645-generic"\nhas_relay = true\n\n'
        )
    (tmp_path / "inv.toml").write_text(text)
    conn = await asyncpg.connect(pg_dsn)
    engine = Engine(
        CONFIG,
        daemon_dsn(pg_dsn),
        ReadingWriter(daemon_dsn(pg_dsn), spool_dir=tmp_path / "spool"),
        DriverPort(MeterSecrets(Credentials(2, "000000"))),
    )
    try:
        await import_inventory(conn, read_inventory(tmp_path / "inv.toml"))
        await add_operators(conn, o1002="approver")
        accounts = []
        for n, meter in enumerate(bus.meters):
            acc = await conn.fetchval(
                "INSERT INTO accounts (number, kind, credit_limit) VALUES ($1, 'prepaid', 0) RETURNING id",
                f"A{n}",
            )
            await conn.execute("INSERT INTO balances (account_id, balance) VALUES ($1, -50)", acc)
            meter_id = await conn.fetchval("SELECT id FROM meters WHERE address = $1", meter.address)
            await assign_from_start(conn, meter_id, acc)
            accounts.append(acc)
        await engine.start()
        yield Fleet(bus, conn, engine, accounts)
    finally:
        await engine.stop()
        await conn.close()
        await bus.stop()


async def _command_of(conn: asyncpg.Connection, address: str) -> asyncpg.Record:
    return await conn.fetchrow(
        """SELECT c.id, c.state::text AS state, c.last_error, c.attempts FROM commands c
           JOIN meters m ON m.id = c.meter_id WHERE m.address = $1 ORDER BY c.id DESC LIMIT 1""",
        address,
    )


async def _audits(conn: asyncpg.Connection, command_id: int, action: str) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE entity = 'command' AND entity_id = $1 AND action = $2",
            str(command_id),
            action,
        )
    )


async def test_approved_disconnects_are_gated_again_when_the_frame_goes_out(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with fleet(pg_dsn, tmp_path, meters=4, seed=201) as f:
        conn, bus = f.conn, f.bus
        assert await run_pass(f.engine, DAY) == []  # four disconnects created, all waiting for approval
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM commands ORDER BY id")]
        assert len(ids) == 4
        assert await approve(conn, ids, "1002", "arrears list checked") == ids
        # while they waited: A0 became protected (保电), meter 1 got a VEE hold; meter 2 and 3 nothing
        await conn.execute(
            "UPDATE accounts SET protected = true, protected_reason = 'home dialysis' WHERE id = $1",
            f.accounts[0],
        )
        await conn.execute(
            "INSERT INTO quantities (name) VALUES ('energy_import_kwh') ON CONFLICT DO NOTHING"
        )
        await conn.execute(
            """INSERT INTO vee_holds (meter_id, quantity_id, rule, reason, first_ts)
               SELECT m.id, q.id, 'decrease', 'register decreased 4345.04 -> 1520.89', $2
               FROM meters m, quantities q WHERE m.address = $1 AND q.name = 'energy_import_kwh'""",
            bus.meters[1].address,
            DAY,
        )
        for _ in range(2):  # two passes in the night window
            outcomes = dict(await run_pass(f.engine, NIGHT))
            assert outcomes[ids[2]] == outcomes[ids[3]] == "pending"
        assert bus.requests[0x1C] == 0  # no frame at all: refused or waiting
        protected, held, night = [await _command_of(conn, m.address) for m in bus.meters[:3]]
        assert (protected["state"], held["state"]) == ("cancelled", "cancelled")
        assert protected["last_error"] == "refused at send: protected: protected (home dialysis)"
        assert held["last_error"].startswith("refused at send: hold.suspect_data: billing data held")
        assert protected["attempts"] == held["attempts"] == 0
        assert await _audits(conn, protected["id"], "command.cancelled") == 1
        assert await _audits(conn, held["id"], "command.cancelled") == 1
        assert night["last_error"] == "waiting: window.night" and night["state"] == "pending"
        assert await _audits(conn, night["id"], "command.waiting") == 1  # said once, not every pass
        outcomes = dict(await run_pass(f.engine, DAY + timedelta(hours=20)))  # 08:00 next morning
        assert outcomes == {ids[2]: "confirmed", ids[3]: "confirmed"}
        assert bus.requests[0x1C] == 2
        assert [m.model.relay.open for m in bus.meters] == [False, False, True, True]


async def test_a_payment_while_it_waited_refuses_the_disconnect_and_sends_no_close(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with fleet(pg_dsn, tmp_path, meters=1, seed=202) as f:
        conn, bus = f.conn, f.bus
        assert await run_pass(f.engine, DAY) == []
        command_id = await conn.fetchval("SELECT id FROM commands")
        await approve(conn, [command_id], "1002", "checked")
        # the payment lands after this pass's arrears flags were computed: the executor alone sees it
        await record_payment(conn, "A0", Decimal("80.00"), "PAY-1", operator="cashier")
        channel = open_channel(bus.url + "?retries=2&turnaround_ms=300")
        driver = make_driver("dlt645-2007", channel, bus.meters[0].address, None, Credentials(2, "000000"))
        try:
            settings = settings_from_config(CONFIG.safety)
            state = await execute(conn, command_id, lambda _: driver, now=lambda: DAY, settings=settings)
        finally:
            await channel.close()
        assert state == "cancelled" and bus.requests[0x1C] == 0
        row = await _command_of(conn, bus.meters[0].address)
        assert row["last_error"] == "refused at send: paid: the account is no longer in arrears"
        assert await run_pass(f.engine, DAY) == []  # the paid episode gets no needless close
        assert await conn.fetchval("SELECT count(*) FROM commands") == 1 and bus.requests[0x1C] == 0


async def test_a_manual_disconnect_of_a_meter_that_changed_account_is_refused(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with fleet(pg_dsn, tmp_path, meters=1, seed=203) as f:
        conn, bus = f.conn, f.bus
        await conn.execute("UPDATE balances SET balance = 20")  # a paying customer
        command_id = await request_command(
            conn, bus.meters[0].address, "disconnect", operator="1002", reason="tampering", now=DAY
        )
        await add_operators(conn, o1003="approver")  # a manual disconnect waits for a second operator
        await conn.execute("UPDATE commands SET approved_by = '1003' WHERE id = $1", command_id)
        new_tenant = await conn.fetchval(
            "INSERT INTO accounts (number, kind, credit_limit) VALUES ('B', 'prepaid', 0) RETURNING id"
        )
        await conn.execute(  # moved before it went out
            "WITH ended AS (UPDATE meter_assignments SET effective_to = now() WHERE effective_to IS NULL"
            " RETURNING meter_id) INSERT INTO meter_assignments"
            " (meter_id, account_id, effective_from, operator)"
            " SELECT meter_id, $1, now() + interval '1 microsecond', 'system' FROM ended",
            new_tenant,
        )
        assert await run_pass(f.engine, DAY) == [(command_id, "cancelled")]
        row = await _command_of(conn, bus.meters[0].address)
        assert row["last_error"].startswith("refused at send: unassigned: the meter left account")
        assert bus.requests[0x1C] == 0 and not bus.meters[0].model.relay.open
