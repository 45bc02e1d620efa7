"""Reconnect modes and relay reconciliation through the daemon's engine and the DL/T 645 simulator:
close-allowed is confirmed by the command bit (the relay stays open until the customer presses the
button); a relay tripped in the field on a paying customer is alarmed once and closed again."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from headend.config import validate_config
from headend.control.service import run_pass
from headend.drivers import Credentials
from headend.engine.ports import DriverPort
from headend.inventory import import_inventory, read_inventory
from headend.secrets import MeterSecrets
from simulators import BusSpec, start_bus
from tests.billing.helpers import assign_from_start
from tests.support.engine import engine_for
from tests.support.waiting import wait_until


async def test_close_allowed_reconnect_and_relay_reconciliation(pg_dsn: str, tmp_path: Path) -> None:
    bus = await start_bus(BusSpec(meters=2, seed=91))
    inventory = tmp_path / "inv.toml"
    inventory.write_text(
        f'[[channels]]\nname = "b"\nurl = "{bus.url}"\n'
        + "".join(
            f'\n[[meters]]\nchannel = "b"\nprotocol = "dlt645-2007"\naddress = "{m.address}"\n'
            'model = "dlt645-generic"\nhas_relay = true\n'
            for m in bus.meters
        )
    )
    conn = await asyncpg.connect(pg_dsn)
    await import_inventory(conn, read_inventory(inventory))
    await conn.execute(
        "INSERT INTO accounts (number, kind, reconnect_mode) VALUES ('BUTTON', 'prepaid', 'close_allowed'),"
        " ('PAYING', 'prepaid', NULL)"
    )
    await conn.execute(
        "INSERT INTO balances (account_id, balance) SELECT id, -5 FROM accounts WHERE number = 'BUTTON'"
    )
    await conn.execute(
        "INSERT INTO balances (account_id, balance) SELECT id, 50 FROM accounts WHERE number = 'PAYING'"
    )
    for meter, number in zip(bus.meters, ("BUTTON", "PAYING"), strict=True):
        await assign_from_start(
            conn,
            await conn.fetchval("SELECT id FROM meters WHERE address = $1", meter.address),
            await conn.fetchval("SELECT id FROM accounts WHERE number = $1", number),
        )
    config = validate_config(
        {
            "polling": {"interval": "2s", "offset": "0s"},
            "read_plans": {"default": {"quantities": ["energy_import_kwh", "relay"]}},
            "backfill": {"enabled": False},
            "clock": {"enabled": False},
            "events": {"enabled": False},
            "metrics": {"port": 0},
            "safety": {
                "no_weekends": False,
                "night_start": "00:00",
                "night_end": "00:00",
                "reconnect_on_mismatch": True,
            },
            "billing": {"notice_period": 0, "min_arrears": 0},
        },
        "test",
    )
    engine = engine_for(config, pg_dsn, tmp_path, DriverPort(MeterSecrets(Credentials(2, "000000"))))
    button, paying = (m.model for m in bus.meters)
    await engine.start()
    try:
        now = datetime.now(UTC)
        assert [state for _, state in await run_pass(engine, now)] == ["confirmed"]
        assert button.relay.open and not paying.relay.open
        await conn.execute("UPDATE balances SET balance = 10")  # BUTTON pays
        assert [state for _, state in await run_pass(engine, now)] == ["confirmed"]
        reconnect = await conn.fetchrow(
            "SELECT reconnect_mode, evidence FROM commands WHERE action = 'reconnect'"
        )
        assert reconnect["reconnect_mode"] == "close_allowed" and bus.requests[0x1C] == 2
        assert button.relay.open and button.relay.awaiting_button  # confirmed by bit 6, not bit 4
        assert button.press_button() and not button.relay.open

        paying.trip("00000001")  # a field switch on a customer who owes nothing
        assert paying.relay.open

        async def metered_open() -> bool:
            value = await conn.fetchval(
                "SELECT r.value FROM readings r JOIN quantities q ON q.id = r.quantity_id"
                " JOIN meters m ON m.id = r.meter_id WHERE q.name = 'relay' AND m.address = $1"
                " ORDER BY r.ts DESC LIMIT 1",
                bus.meters[1].address,
            )
            return value == 0.0

        await wait_until(metered_open, 20, "metered open")
        await run_pass(engine, datetime.now(UTC))  # the mismatch is found; a reconnect is created
        mismatch = await conn.fetchrow("SELECT expected_open, observed_open FROM relay_mismatches")
        assert tuple(mismatch) == (False, True)
        assert engine.metrics.relay_mismatches._value.get() == 1
        states = [s for _, s in await run_pass(engine, datetime.now(UTC))]  # executes the reconnect
        assert states == ["confirmed"] and not paying.relay.open
        command = await conn.fetchrow("SELECT cause, operator FROM commands WHERE cause = 'reconcile'")
        assert tuple(command) == ("reconcile", "system")
        assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'relay.mismatch'") == 1
    finally:
        await engine.stop()
        await conn.close()
        await bus.stop()
