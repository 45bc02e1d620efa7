"""``headend params check``: the daemon reads back each meter's active schedule (reads only) and the
CLI reports the meters whose schedule differs from the one their account's time-of-use tariff
implies, exit 1 when any does. A meter running the tariff's set matches; one on another schedule,
and one holding the tariff's set only in its standby set, differ. Without ``--read`` the last
read-back is used. The engine and the campaign runner run in the test's loop beside a simulated bus."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest

from headend.billing.tariff import slots_from
from headend.config import validate_config
from headend.drivers import Credentials
from headend.engine.ports import DriverPort
from headend.params.from_tariff import set_from_slots
from simulators import BusSpec, start_bus
from tests.params.test_campaign_daemon import zone_at
from tests.support.cli import CliResult, headend_in_process
from tests.support.engine import engine_for, import_buses
from tests.support.operators import add_operators, operator_env

pytestmark = pytest.mark.timeout(60)
SLOTS = ("08:00-22:00=0.60", "22:00-08:00=0.30")


def cli(dsn: str, *args: str) -> CliResult:
    return headend_in_process(*args, "--dsn", dsn, env=operator_env())


async def _cli(dsn: str, *args: str) -> CliResult:
    return await asyncio.to_thread(cli, dsn, *args)


def _states(done: CliResult) -> dict[str, tuple[str, str]]:
    return {r["address"]: (r["state"], r["detail"]) for r in json.loads(done.stdout)}


async def test_check_reports_the_meters_whose_schedule_differs_from_their_tariff(
    pg_dsn: str, tmp_path: Path
) -> None:
    bus = await start_bus(BusSpec(meters=3, seed=2531))
    conn = await asyncpg.connect(pg_dsn)
    engine = None
    try:
        await add_operators(conn, o2531="admin")
        await import_buses(conn, tmp_path / "inv.toml", {"bus": bus})
        slots = [a for s in SLOTS for a in ("--slot", s)]
        added = await _cli(pg_dsn, "tariffs", "add", "--operator", "2531", "day", "--kind", "tou", *slots)
        assert added.returncode == 0, added.stderr
        definition = await conn.fetchval("SELECT definition::text FROM tariffs WHERE name = 'day'")
        expected = set_from_slots(slots_from(json.loads(definition)))
        for index, meter in enumerate(bus.meters):
            account = await conn.fetchval(
                "INSERT INTO accounts (number, kind, tariff_id) SELECT $1, 'postpaid', id FROM tariffs"
                " WHERE name = 'day' RETURNING id",
                f"A{index}",
            )
            await conn.execute(
                "INSERT INTO meter_assignments (meter_id, account_id, effective_from, operator)"
                " SELECT id, $2, now() - interval '1 day', 'test' FROM meters WHERE address = $1",
                meter.address,
                account,
            )
        # meter 0 runs the tariff's set; meter 2 holds it only as its standby set; meter 1 neither
        for di, value in expected.meter_items(1).items():
            bus.meters[0].model.tou.write(di, value)
        for di, value in expected.meter_items(2).items():
            bus.meters[2].model.tou.write(di, value)
        addresses = [m.address for m in bus.meters]

        never = await _cli(pg_dsn, "params", "check", "--json")
        assert never.returncode == 1
        assert set(_states(never).values()) == {("not read", "")}

        config = validate_config(
            {
                "polling": {"interval": "1h", "inventory_reload": "1h"},
                "read_plans": {"default": {"quantities": ["energy_import_kwh"]}},
                "backfill": {"enabled": False},
                "clock": {"enabled": False},
                "events": {"enabled": False},
                "metrics": {"port": 0},
                "engine": {"services": ["headend.params.runner:run"]},
                "campaigns": {"timezone": zone_at(12)},
            },
            "test",
        )
        port = DriverPort(secrets=Credentials(2, "000000"))
        engine = engine_for(config, pg_dsn, tmp_path, port)
        await engine.start()
        writes_before = bus.requests[0x14]
        done = await _cli(pg_dsn, "params", "check", "--read", "--wait", "30", "--json", "--tariff", "day")
        assert done.returncode == 1, done.stderr
        states = _states(done)
        assert states[addresses[0]] == ("matches", "")
        assert states[addresses[1]][0] == "differs"
        assert "04010001 first_set_daily_table_1" in states[addresses[1]][1]
        assert states[addresses[2]][0] == "differs"  # its active set is still the old one
        assert bus.requests[0x14] == writes_before == 0  # reads only

        # meter 1 is put right at the meter: the last read-back still says it differs until read again
        for di, value in expected.meter_items(1).items():
            bus.meters[1].model.tou.write(di, value)
        stale = await _cli(pg_dsn, "params", "check", "--json", "--channel", "bus")
        assert _states(stale)[addresses[1]][0] == "differs"
        bus.meters[2].model.tou.run_set(2)
        fresh = await _cli(pg_dsn, "params", "check", "--read", "--wait", "30")
        assert fresh.returncode == 0, fresh.stdout + fresh.stderr
        assert fresh.stdout.strip().endswith("3 of 3 meters match their tariff")

        nothing = await _cli(pg_dsn, "params", "check", "--area", "nowhere")
        assert (nothing.returncode, nothing.stderr.strip()) == (
            1,
            "error: no DL/T 645-2007 meter on a time-of-use tariff matches",
        )
    finally:
        if engine is not None:
            await engine.stop()
        await conn.close()
        await bus.stop()
