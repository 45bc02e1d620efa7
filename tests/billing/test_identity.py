"""The daily identity check through the daemon: another device answering at a DL/T 645 address (its
meter number 04 00 04 02 differs) holds billing until an operator records the replacement."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from headend.billing.vee import resolve_hold
from headend.config import validate_config
from headend.inventory import import_inventory, read_inventory
from simulators import BusSpec, start_bus
from tests.support.engine import engine_for
from tests.support.waiting import wait_until


@pytest.mark.timeout(120)
async def test_a_different_meter_number_holds_billing_until_resolved(pg_dsn: str, tmp_path: Path) -> None:
    bus = await start_bus(BusSpec(meters=1, seed=141))
    meter = bus.meters[0]
    inventory = tmp_path / "inv.toml"
    inventory.write_text(
        f'[[channels]]\nname = "b"\nurl = "{bus.url}"\n\n'
        '[[meters]]\nchannel = "b"\nprotocol = "dlt645-2007"\n'
        f'address = "{meter.address}"\nmodel = "dlt645-generic"\naccount = "ID-1"\n'
    )
    conn = await asyncpg.connect(pg_dsn)
    tariff = await conn.fetchval("INSERT INTO tariffs (name, kind) VALUES ('res', 'flat') RETURNING id")
    await conn.execute(
        "INSERT INTO tariff_prices (tariff_id, register, price, effective_from)"
        " VALUES ($1, 'total', 1, '2000-01-01Z')",
        tariff,
    )
    await conn.execute(
        "INSERT INTO accounts (number, kind, tariff_id) VALUES ('ID-1', 'prepaid', $1)", tariff
    )
    await import_inventory(conn, read_inventory(inventory))
    config = validate_config(
        {
            "engine": {"services": ["headend.billing.service:run"]},
            "polling": {"interval": "2s", "offset": "0s"},
            "backfill": {"enabled": False},
            "clock": {"enabled": False},
            "events": {"enabled": False},
            "metrics": {"port": 0},
            "billing": {"run_every": "300ms", "identity_every": "1s"},
        },
        "test",
    )
    engine = engine_for(config, pg_dsn, tmp_path)

    async def recorded() -> bool:
        return await conn.fetchval("SELECT identity FROM meter_identities") == meter.address

    async def held() -> bool:
        return await conn.fetchval("SELECT count(*) FROM vee_holds WHERE rule = 'identity'") == 1

    async def suspect_readings() -> bool:
        return await conn.fetchval("SELECT count(*) FROM readings WHERE quality = 'suspect'") >= 2

    async def billed_after_hold() -> bool:
        return bool(
            await conn.fetchval(
                "SELECT count(*) FROM ledger l, vee_holds h"
                " WHERE l.kind = 'charge' AND l.period_end > h.first_ts"
            )
        )

    await engine.start()
    try:
        await wait_until(recorded, 40, "recorded")
        meter.model.meter_number = "880000000001"  # another device now answers at this address
        await wait_until(held, 40, "held")
        reason = await conn.fetchval("SELECT reason FROM vee_holds")
        assert f"meter number changed {meter.address} -> 880000000001" in reason
        await wait_until(suspect_readings, 40, "suspect readings")
        assert not await billed_after_hold()  # nothing is billed from the new device's readings
        hold = await conn.fetchval("SELECT id FROM vee_holds")
        await resolve_hold(conn, hold, "replaced", operator="tech3", reason="replaced on site")
        assert await conn.fetchval("SELECT identity FROM meter_identities") == "880000000001"
        await wait_until(billed_after_hold, 40, "billing to resume once the operator recorded the swap")
    finally:
        await engine.stop()
        await conn.close()
        await bus.stop()
