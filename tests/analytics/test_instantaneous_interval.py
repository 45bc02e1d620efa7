"""Per-phase inputs of the exception rules read at their own interval: ``headend run`` polls the energy
register every 2 s and the plan's instantaneous quantities (phase voltages and currents) only in the
first cycle of each 6 s; the voltage_loss rule finds the simulated meter that lost phase b from those
reads. A quantity in both lists is refused."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest

from headend.config import ConfigError, load_config
from simulators.bus import BusSpec, start_bus
from tests.support.daemons import Daemon
from tests.support.engine import inventory_file
from tests.support.operators import import_inventory_cli
from tests.support.ports import free_port
from tests.support.waiting import wait_until

PHASES = [f"{k}_{p}_{u}" for k, u in (("voltage", "v"), ("current", "a")) for p in "abc"]


def _config(path: Path, dsn: str, tmp_path: Path, metrics_port: int) -> Path:
    path.write_text(
        f'[database]\ndsn = "{dsn}"\nspool_dir = "{tmp_path / "spool"}"\n'
        '[polling]\ninterval = "2s"\ninventory_reload = "1h"\n'
        '[read_plans.default]\nquantities = ["energy_import_kwh"]\n'
        f'instantaneous = {json.dumps(PHASES)}\ninstantaneous_interval = "6s"\n'
        "[backfill]\nenabled = false\n[events]\nenabled = false\n[clock]\nenabled = false\n"
        '[timeouts]\ninitial = "1s"\nmaximum = "2s"\n'
        '[exceptions]\nenabled = true\nrules = ["voltage_loss"]\nwindow = "1h"\n'
        f'[metrics]\nport = {metrics_port}\n[logging]\nformat = "json"\n'
    )
    return path


async def test_phases_are_read_every_third_cycle_and_feed_the_rules(pg_dsn: str, tmp_path: Path) -> None:
    bus = await start_bus(BusSpec(meters=2, seed=2426, phases=3, conditions={1: "lost_phase=b"}))
    conn = await asyncpg.connect(pg_dsn)
    daemon: Daemon | None = None
    try:
        assert (
            import_inventory_cli(pg_dsn, inventory_file(tmp_path / "inv.toml", {"bus": bus})).returncode == 0
        )
        port = free_port()
        daemon = await Daemon.start(
            _config(tmp_path / "h.toml", pg_dsn, tmp_path, port), tmp_path / "s", port
        )
        energy = (
            "SELECT DISTINCT r.ts FROM readings r JOIN quantities q ON q.id = r.quantity_id WHERE q.name = $1"
        )

        async def enough() -> bool:
            return len(await conn.fetch(energy, "energy_import_kwh")) >= 7

        await wait_until(enough, 60, "seven cycles stored")
        lost = (
            "SELECT m.address FROM exceptions x JOIN meters m ON m.id = x.meter_id"
            " WHERE x.rule = 'voltage_loss'"
        )
        await wait_until(lambda: conn.fetchval(lost), 20, "the voltage_loss exception")
        assert [r["address"] for r in await conn.fetch(lost)] == [bus.meters[1].address]
        await daemon.close()
        daemon = None
        cycles = sorted(r["ts"] for r in await conn.fetch(energy, "energy_import_kwh"))
        for quantity in PHASES:
            read = sorted(r["ts"] for r in await conn.fetch(energy, quantity))
            assert read == [t for t in cycles if int(t.timestamp()) % 6 == 0], quantity
        assert (
            len(cycles) >= 7
            and 2 <= sum(1 for t in cycles if int(t.timestamp()) % 6 == 0) <= len(cycles) // 3 + 1
        )
    finally:
        if daemon is not None:
            await daemon.close()
        await conn.close()
        await bus.stop()


def test_a_quantity_in_both_lists_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.toml"
    path.write_text(
        '[read_plans.default]\nquantities = ["energy_import_kwh", "voltage_a_v"]\n'
        'instantaneous = ["voltage_a_v"]\ninstantaneous_interval = "15m"\n'
    )
    with pytest.raises(ConfigError, match="'voltage_a_v' is in both quantities and instantaneous"):
        load_config(path)
