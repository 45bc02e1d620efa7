"""In a cluster the campaign runner writes only under its channel's lease: a meter whose channel another
daemon holds is left to that daemon (no attempt counted, no frame), and a meter whose fence the
database refuses (the lease moved since the pass began) gets no write frame and stays due; the meter
whose fence passes is written and verified in the same pass. One pass of the runner over a real
engine and a simulated bus, the host's lease and fence standing in for the cluster's."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg

from headend.config import validate_config
from headend.drivers import Credentials
from headend.engine.ports import DriverPort
from headend.inventory import import_inventory, read_inventory
from headend.params import runner
from headend.services import EngineServices, LeaseMoved
from protocols.dlt645.tou import daily_table_di
from simulators import BusSpec, start_bus
from tests.params.test_campaign_daemon import zone_at
from tests.support.cli import CliResult, headend_in_process
from tests.support.engine import engine_for
from tests.support.operators import add_operators, operator_env

METER_PASSWORD = "000000"
WRITE = 0x14
NEW = 1  # the campaign's schedule: all day sharp; every meter starts on all day flat (t3)


def cli(*args: str) -> CliResult:
    return headend_in_process(*args, env=operator_env())


async def test_the_runner_writes_only_under_its_channel_lease(pg_dsn: str, tmp_path: Path) -> None:
    bus = await start_bus(BusSpec(meters=3, seed=2611, password=METER_PASSWORD))
    for meter in bus.meters:
        meter.model.tou.write(daily_table_di(1, 1), [{"start": "00:00", "tariff": 3}])
    inventory = tmp_path / "inv.toml"
    lines = ["[[channels]]", 'name = "bus"', f'url = "{bus.url}?parity=N"', ""]
    for meter in bus.meters:
        lines += ["[[meters]]", 'channel = "bus"', 'protocol = "dlt645-2007"', f'address = "{meter.address}"']
        lines += ['model = "dlt645-generic"', ""]
    inventory.write_text("\n".join(lines))
    set_file = tmp_path / "set.json"
    set_file.write_text(
        json.dumps({"seasons": [{"start": "01-01", "table": 1}],
                    "daily_tables": [[{"start": "00:00", "tariff": NEW}]], "tariffs": 4})
    )  # fmt: skip
    conn = await asyncpg.connect(pg_dsn)
    engine = None
    try:
        await add_operators(conn, o2611="operator", o2612="approver", o2613="admin")
        await import_inventory(conn, read_inventory(inventory))
        steps = [
            ("params", "set", "add", "s", "--file", str(set_file), "--operator", "2613"),
            ("params", "campaign", "create", "c", "--set", "s", "--switch-at", "2030-01-01T00:00:00+08:00",
             "--channel=bus", "--operator", "2611"),
            ("params", "campaign", "approve", "c", "--operator", "2612"),
            ("params", "campaign", "start", "c", "--operator", "2611"),
        ]  # fmt: skip
        for step in steps:
            done = await asyncio.to_thread(cli, *step, "--dsn", pg_dsn)
            assert done.returncode == 0, (step, done.stderr)
        config = validate_config(
            {
                "polling": {"interval": "1h", "inventory_reload": "1h"},
                "read_plans": {"default": {"quantities": ["energy_import_kwh"]}},
                "backfill": {"enabled": False},
                "clock": {"enabled": False},
                "events": {"enabled": False},
                "metrics": {"port": 0},
                "engine": {"services": []},
                "campaigns": {"timezone": zone_at(12), "pace": 3},  # the bus's three meters in one pass
            },
            "test",
        )
        engine = engine_for(config, pg_dsn, tmp_path, DriverPort(secrets=Credentials(2, METER_PASSWORD)))
        await engine.start()
        ids = {r["address"]: r["id"] for r in await conn.fetch("SELECT id, address FROM meters")}
        elsewhere, moved, held = (ids[m.address] for m in bus.meters)
        fenced: list[int] = []

        async def fence(meter_id: int) -> None:
            fenced.append(meter_id)
            if meter_id == moved:
                raise LeaseMoved(f"meter {meter_id}: write not sent: its channel is another daemon's")

        assert engine.pool is not None
        host = EngineServices(
            engine.config,
            engine.pool,
            engine.metrics,
            engine.control,
            lease_of=lambda meter_id: None if meter_id == elsewhere else ("d1", 7),
            write_fence=fence,
        )
        lanes: dict[int, asyncio.Task[None]] = {}
        await runner._pass(host, lanes)  # the bus's lane started: its three meters, one after another
        await asyncio.gather(*lanes.values())

        found = await conn.fetch("SELECT meter_id, state, attempts FROM tou_campaign_meters")
        assert {r["meter_id"]: (r["state"], r["attempts"]) for r in found} == {
            elsewhere: ("pending", 0),  # the other daemon's: not even an attempt
            moved: ("pending", 1),  # asked, fenced off before its first write: due again
            held: ("verified", 1),
        }
        assert sorted(fenced) == sorted([moved, held])
        models = {
            key: meter.model for key, meter in zip(("elsewhere", "moved", "held"), bus.meters, strict=True)
        }
        assert models["held"].tou.daily_tables[(2, 1)] == [{"start": "00:00", "tariff": NEW}]
        for key in ("elsewhere", "moved"):
            assert models[key].tou.switch["04000107"] is None, key  # nothing written to it
        assert bus.requests[WRITE] > 0
    finally:
        if engine is not None:
            await engine.stop()
        await conn.close()
        await bus.stop()
