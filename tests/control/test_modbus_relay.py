"""Fee control on a Modbus meter with a relay (Hiking DDS238-2 ZN/SR) through the daemon's engine."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from headend.config import validate_config
from headend.control.service import run_pass
from headend.inventory import import_inventory, read_inventory
from simulators import BusSpec, start_bus
from tests.support.engine import engine_for


async def test_arrears_and_payment_switch_a_modbus_relay(pg_dsn: str, tmp_path: Path) -> None:
    bus = await start_bus(
        BusSpec(protocol="modbus", model="hiking_dds238_2_znsr", meters=2, transport="modbus-tcp", seed=85)
    )
    target, neighbour = bus.meters
    inventory = tmp_path / "inv.toml"
    inventory.write_text(
        f'[[channels]]\nname = "gw"\nurl = "{bus.url}"\n\n'
        f'[[meters]]\nchannel = "gw"\nprotocol = "modbus"\nunit_id = {target.unit_id}\n'
        'model = "hiking_dds238_2_znsr"\naccount = "M-1"\nhas_relay = true\n\n'
        f'[[meters]]\nchannel = "gw"\nprotocol = "modbus"\nunit_id = {neighbour.unit_id}\n'
        'model = "hiking_dds238_2_znsr"\nhas_relay = true\n'
    )
    conn = await asyncpg.connect(pg_dsn)
    await conn.execute("INSERT INTO accounts (number, kind, credit_limit) VALUES ('M-1', 'prepaid', 0)")
    await conn.execute("INSERT INTO balances (account_id, balance) SELECT id, -3 FROM accounts")
    await import_inventory(conn, read_inventory(inventory))
    config = validate_config(
        {
            "polling": {"interval": "1h"},
            "backfill": {"enabled": False},
            "clock": {"enabled": False},
            "events": {"enabled": False},
            "metrics": {"port": 0},
            "safety": {"no_weekends": False, "night_start": "00:00", "night_end": "00:00"},
            "billing": {"notice_period": 0, "min_arrears": 0},  # relay mechanics, not the arrears rule
        },
        "test",
    )
    engine = engine_for(config, pg_dsn, tmp_path)
    await engine.start()
    try:
        assert [state for _, state in await run_pass(engine, datetime.now(UTC))] == ["confirmed"]
        assert target.model.relay.open and not neighbour.model.relay.open
        evidence = await conn.fetchval("SELECT evidence::text FROM commands WHERE action = 'disconnect'")
        assert '"open": true' in evidence  # the relay register read back, not the write's echo
        await conn.execute("UPDATE balances SET balance = 20")
        assert [state for _, state in await run_pass(engine, datetime.now(UTC))] == ["confirmed"]
        assert not target.model.relay.open
        assert await conn.fetchval("SELECT count(*) FROM commands WHERE state = 'confirmed'") == 2
    finally:
        await engine.stop()
        await conn.close()
        await bus.stop()
