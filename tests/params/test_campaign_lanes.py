"""Each bus runs its campaign meters in a lane of its own: a bus whose meter is slow to settle (it
does not answer: its attempt waits some 10 s for the one request it sends, the channel being at 300
baud) holds no other bus back. The
other bus's three meters, one at a time (``pace = 1``), are all verified while the silent meter's
attempt is still waiting; with one pass for every bus at once, each pass waiting for the slowest
bus, the second and third would wait for it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from headend.config import validate_config
from headend.drivers import Credentials
from headend.engine.ports import DriverPort
from headend.inventory import import_inventory, read_inventory
from protocols.dlt645.tou import daily_table_di
from simulators import BusSpec, SimBus, start_bus
from tests.params.test_campaign_daemon import all_day_sharp, zone_at
from tests.support.cli import CliResult, headend_in_process
from tests.support.engine import engine_for
from tests.support.operators import add_operators, operator_env
from tests.support.waiting import wait_until

pytestmark = pytest.mark.long(seconds=12)  # the silent meter's wait ends before the engine stops
METER_PASSWORD = "000000"


def cli(*args: str) -> CliResult:
    return headend_in_process(*args, env=operator_env())


def _inventory(path: Path, buses: dict[str, tuple[SimBus, str]]) -> Path:
    lines = []
    for name, (bus, options) in buses.items():
        lines += ["[[channels]]", f'name = "{name}"', f'url = "{bus.url}?parity=N{options}"', ""]
        for meter in bus.meters:
            lines += ["[[meters]]", f'channel = "{name}"', 'protocol = "dlt645-2007"']
            lines += [f'address = "{meter.address}"', 'model = "dlt645-generic"', ""]
    path.write_text("\n".join(lines))
    return path


async def test_a_bus_with_a_silent_meter_holds_no_other_bus_back(pg_dsn: str, tmp_path: Path) -> None:
    quick = await start_bus(BusSpec(meters=3, seed=2531, password=METER_PASSWORD, turnaround_s=0.005))
    silent = await start_bus(BusSpec(meters=1, seed=2532, password=METER_PASSWORD))
    silent.meters[0].model.offline = True
    for meter in quick.meters:
        meter.model.tou.write(daily_table_di(1, 1), [{"start": "00:00", "tariff": 3}])
    set_file = all_day_sharp(tmp_path / "set.json")
    conn = await asyncpg.connect(pg_dsn)
    engine = None
    try:
        await add_operators(conn, o2531="operator", o2532="approver", o2533="admin")
        inventory = _inventory(
            tmp_path / "inv.toml", {"quick": (quick, ""), "silent": (silent, "&retries=0&baud=300")}
        )
        await import_inventory(conn, read_inventory(inventory))
        steps = [
            ("params", "set", "add", "s", "--file", str(set_file), "--operator", "2533"),
            ("params", "campaign", "create", "c", "--set", "s", "--switch-at", "2030-01-01T00:00:00+08:00",
             "--channel=quick", "--channel=silent", "--max-attempts", "1", "--operator", "2531"),
            ("params", "campaign", "approve", "c", "--operator", "2532"),
            ("params", "campaign", "start", "c", "--operator", "2531"),
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
                "timeouts": {"initial": "20s", "maximum": "20s"},  # no job cut short
                "engine": {"services": ["headend.params.runner:run"]},
                "campaigns": {"timezone": zone_at(12), "pace": 1},
            },
            "test",
        )
        engine = engine_for(config, pg_dsn, tmp_path, DriverPort(secrets=Credentials(2, METER_PASSWORD)))
        await engine.start()

        async def by_channel() -> dict[str, list[tuple[str, int]]]:
            found = await conn.fetch(
                "SELECT c.name, x.state, x.attempts FROM tou_campaign_meters x JOIN meters m"
                " ON m.id = x.meter_id JOIN channels c ON c.id = m.channel_id ORDER BY m.id"
            )
            states: dict[str, list[tuple[str, int]]] = {}
            for r in found:
                states.setdefault(r["name"], []).append((r["state"], r["attempts"]))
            return states

        async def quick_done() -> bool:
            return (await by_channel())["quick"] == [("verified", 1)] * 3

        await wait_until(quick_done, 9, "the quick bus's meters verified")
        assert (await by_channel())["silent"] == [("pending", 1)]  # its attempt still waits
    finally:
        if engine is not None:
            await engine.stop()
        await conn.close()
        await quick.stop()
        await silent.stop()
