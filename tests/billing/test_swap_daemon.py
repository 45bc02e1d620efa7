"""The issue's first scenario end to end through the daemon: a prepaid customer's Modbus meter is
swapped without a record (4345.04 -> 1520.89). The billing and fee-control services run as configured;
nothing above normal consumption is charged, nothing is disconnected, and the hold with its reason is
visible in ``headend billing holds``. The daemon runs as the documented daemon login and the CLI as the
desk login, so a grant they miss (such as reading ``meter_replacements``) fails the test."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from headend.config import validate_config
from headend.inventory import import_inventory, read_inventory
from simulators import BusSpec, start_bus
from tests.support.cli import headend
from tests.support.engine import engine_for
from tests.support.waiting import wait_until


@pytest.mark.timeout(120)
async def test_unrecorded_swap_on_a_prepaid_modbus_meter_is_held_not_charged(
    pg_dsn: str, logins: dict[str, str], tmp_path: Path
) -> None:
    bus = await start_bus(
        BusSpec(protocol="modbus", model="hiking_dds238_2_znsr", meters=1, transport="modbus-tcp", seed=131)
    )
    meter = bus.meters[0]
    meter.model.registers.import_tariffs[1:] = [4345.04, 0.0, 0.0, 0.0]
    inventory = tmp_path / "inv.toml"
    inventory.write_text(
        f'[[channels]]\nname = "gw"\nurl = "{bus.url}"\n\n'
        f'[[meters]]\nchannel = "gw"\nprotocol = "modbus"\nunit_id = {meter.unit_id}\nname = "flat-12"\n'
        'model = "hiking_dds238_2_znsr"\naccount = "P-12"\nhas_relay = true\n'
    )
    conn = await asyncpg.connect(pg_dsn)
    tariff = await conn.fetchval("INSERT INTO tariffs (name, kind) VALUES ('res', 'flat') RETURNING id")
    await conn.execute(
        "INSERT INTO tariff_prices (tariff_id, register, price, effective_from)"
        " VALUES ($1, 'total', 1, '2000-01-01Z')",
        tariff,
    )
    await conn.execute(
        "INSERT INTO accounts (number, kind, tariff_id, credit_limit) VALUES ('P-12', 'prepaid', $1, 0)",
        tariff,
    )
    await conn.execute(  # an opening credit, in the ledger as every balance must be
        "INSERT INTO ledger (account_id, kind, amount, idempotency_key)"
        " SELECT id, 'adjustment', 100, 'opening'"
        " FROM accounts"
    )
    await conn.execute("INSERT INTO balances (account_id, balance) SELECT id, 100 FROM accounts")
    await import_inventory(conn, read_inventory(inventory))
    config = validate_config(
        {
            "engine": {"services": ["headend.billing.service:run", "headend.control.service:run"]},
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
                "run_every": "300ms",
            },
            "billing": {"run_every": "300ms", "notice_period": 0, "min_arrears": 0},  # quick to cut
        },
        "test",
    )
    daemon = logins["daemon"]
    engine = engine_for(config, daemon, tmp_path)

    async def billed() -> bool:
        return await conn.fetchval("SELECT count(*) FROM ledger WHERE kind = 'charge'") > 0

    async def suspect_after_hold(count: int) -> bool:
        return (
            await conn.fetchval(
                "SELECT count(*) FROM readings r JOIN vee_holds h ON h.meter_id = r.meter_id"
                " AND h.quantity_id = r.quantity_id WHERE r.ts > h.first_ts AND r.quality = 'suspect'"
            )
            >= count
        )

    await engine.start()
    try:
        await wait_until(billed, 40, "billed")  # normal consumption is billed before the swap
        meter.model.registers.import_tariffs[1:] = [1520.89, 0.0, 0.0, 0.0]  # swapped, nobody told billing
        # the hold, then readings validated after it: each marked by a billing pass (every 300 ms, with
        # fee-control passes alongside) that then bills; three of them are passes over the held data
        await wait_until(lambda: suspect_after_hold(2), 40, "two readings validated after the hold")
        await wait_until(lambda: suspect_after_hold(3), 40, "another pass over the held data")
        charged = await conn.fetchval("SELECT sum(amount) FROM ledger WHERE kind = 'charge'")
        assert Decimal("-1.00") < charged <= 0  # normal consumption only: a few watt-hours
        assert await conn.fetchval("SELECT balance FROM balances") == 100 + charged
        assert await conn.fetchval("SELECT arrears FROM accounts") is False
        assert await conn.fetchval("SELECT count(*) FROM commands") == 0 and not meter.model.relay.open
    finally:
        await engine.stop()
        await conn.close()
        await bus.stop()
    shown = headend("billing", "holds", "--dsn", logins["billing"])
    assert shown.returncode == 0, shown.stderr
    hold = json.loads(shown.stdout.splitlines()[0])
    assert hold["meter"] == "flat-12" and hold["account"] == "P-12" and hold["rule"] == "decrease"
    assert "4345.04 -> 1520.89" in hold["reason"] and "meter replaced" in hold["reason"]
