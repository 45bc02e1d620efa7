"""Exception rules end to end: ``headend run`` reads simulated three-phase meters put in conditions (a
stopped register, reversed wiring, a lost phase, current imbalance, a clock 15 minutes off), a meter on a
dead line, transformer areas whose midnight registers say too much loss, negative loss and a jump; each
rule opens exactly its exception after a cycle. Then, on demand, a consumption spike, a meter clear
(its register read lower after a restart) and a stopped meter running again: the spike and the
backwards register open theirs, the stopped meter's exception closes by itself, and what was already
open is counted again, not duplicated, across the restart."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from headend.store.maintenance import ensure_partitions
from simulators.bus import BusSpec, SimBus, start_bus
from simulators.conditions import MeterCondition
from simulators.meter import Registers
from tests.billing.helpers import add_reading
from tests.support.daemons import Daemon
from tests.support.operators import import_inventory_cli
from tests.support.ports import free_port
from tests.support.waiting import wait_until

ZONE = ZoneInfo("Asia/Shanghai")  # the [analytics] default
QUANTITIES = [
    "energy_import_kwh",
    "energy_export_kwh",
    *(f"voltage_{p}_v" for p in "abc"),
    *(f"current_{p}_a" for p in "abc"),
]
# meter index -> condition; m6 spikes and m7 is cleared on demand, m9..m14 feed the three areas
CONDITIONS = {1: "stopped", 2: "reversed", 3: "lost_phase=b", 4: "imbalance=0.7"}
CLOCK_OFF = {5: 900.0}
AREAS = {"high": (9, 10), "neg": (11, 12), "ok": (13, 14)}  # name -> (supply, customer)
HISTORY_DAYS = 11  # complete days of seeded midnight registers, the latest two days before today


def _inventory(bus: SimBus, installed: datetime) -> str:
    meters = "".join(
        f'[[meters]]\nchannel = "bus"\nprotocol = "dlt645-2007"\naddress = "{m.address}"\n'
        f'model = "dlt645-generic"\nname = "m{i}"\ninstalled_at = "{installed.isoformat()}"\n'
        for i, m in enumerate(bus.meters)
    )
    areas = "".join(
        f'[[areas]]\nname = "{name}"\nsupply_meter = "m{supply}"\nmembers = ["m{customer}"]\n'
        "effective = 2020-01-01\n"
        for name, (supply, customer) in AREAS.items()
    )
    return (
        f'[[channels]]\nname = "bus"\nurl = "{bus.url}"\n'
        f'[[channels]]\nname = "dead"\nurl = "tcp://127.0.0.1:{free_port()}"\n'
        f"{meters}"
        '[[meters]]\nchannel = "dead"\nprotocol = "dlt645-2007"\naddress = "4242"\nmodel = "dlt645-generic"\n'
        f'name = "never-read"\ninstalled_at = "{installed.isoformat()}"\n'
        f"{areas}"
    )


def _config(path: Path, dsn: str, tmp_path: Path, metrics_port: int) -> Path:
    path.write_text(
        f'[database]\ndsn = "{dsn}"\nspool_dir = "{tmp_path / "spool"}"\n'
        '[polling]\ninterval = "10s"\noffset = "1s"\ninventory_reload = "1h"\n'
        f"[read_plans.default]\nquantities = {json.dumps(QUANTITIES)}\n"
        "[backfill]\nenabled = false\n[events]\nenabled = false\n"
        '[clock]\ncheck_every = "1h"\nbroadcast_limit = "1h"\nboundary_guard = "0.1s"\n'
        'midnight_guard = "0.1s"\n'
        '[timeouts]\ninitial = "1s"\nmaximum = "3s"\n'
        '[exceptions]\nenabled = true\nwindow = "60s"\nauto_close_after = "1s"\nreverse_min_kwh = 0.01\n'
        'spike_window = "30s"\nspike_history = "1h"\nspike_factor = 4\nspike_min_kwh = 0.1\n'
        'clock_offset = "5m"\nno_read_after = "40s"\narea_days = 14\nloss_jump_points = 5\n'
        f'[metrics]\nport = {metrics_port}\n[logging]\nformat = "json"\n'
    )
    return path


async def _seed_areas(conn: asyncpg.Connection, today: date) -> None:
    """Midnight registers of the areas' meters: 'high' loses 5 % a day, then 30 % on its latest day;
    'neg' gives its customer 4 % more than its supply; 'ok' loses 5 % throughout."""
    ids = {r["name"]: r["id"] for r in await conn.fetch("SELECT name, id FROM meters")}
    first = today - timedelta(days=HISTORY_DAYS + 1)
    start = datetime.combine(first, time(0), ZONE).astimezone(UTC)
    await ensure_partitions(conn, start - timedelta(days=1), start + timedelta(days=HISTORY_DAYS + 2))
    for n in range(HISTORY_DAYS + 1):  # the midnights from the first day's start to the latest day's end
        at = datetime.combine(first + timedelta(days=n), time(0), ZONE).astimezone(UTC)
        for name, (supply, customer) in AREAS.items():
            taken = {"high": 95.0, "neg": 104.0, "ok": 95.0}[name]
            customers = 1000 + taken * n - (25.0 if name == "high" and n == HISTORY_DAYS else 0.0)
            await add_reading(conn, ids[f"m{supply}"], at, 1000 + 100.0 * n)
            await add_reading(conn, ids[f"m{customer}"], at, customers)


async def _active(conn: asyncpg.Connection) -> set[tuple[str, str]]:
    found = await conn.fetch(
        "SELECT x.rule, coalesce(m.name, a.name) AS subject FROM exceptions x"
        " LEFT JOIN meters m ON m.id = x.meter_id LEFT JOIN areas a ON a.id = x.area_id"
        " WHERE x.state = 'open'"
    )
    return {(r["rule"], r["subject"]) for r in found}


@pytest.mark.long(seconds=60)
async def test_each_rule_opens_its_exception_from_what_the_daemon_stored(pg_dsn: str, tmp_path: Path) -> None:
    bus = await start_bus(
        BusSpec(
            meters=15, seed=2424, phases=3, load_scale=10, conditions=CONDITIONS, clock_offsets_s=CLOCK_OFF
        )
    )
    conn = await asyncpg.connect(pg_dsn)
    daemon: Daemon | None = None
    try:
        spiking = bus.meters[6].model
        now = datetime.now(UTC)
        spiking.load_scale = 5.0 / (spiking.power_at(now) / spiking.load_scale)  # about 5 kW, 40 kW spiked
        inventory = tmp_path / "inv.toml"
        inventory.write_text(_inventory(bus, now - timedelta(days=4)))
        done = import_inventory_cli(pg_dsn, inventory)
        assert done.returncode == 0, done.stderr
        await _seed_areas(conn, now.astimezone(ZONE).date())
        await conn.execute(
            "INSERT INTO events (category, kind, meter_id, occurred_at, details)"
            " SELECT 'meter', 'meter_cover_open', id, now() - interval '1 hour', '{}'"
            " FROM meters WHERE name = 'm8'"
        )
        metrics_port = free_port()
        config = _config(tmp_path / "headend.toml", pg_dsn, tmp_path, metrics_port)
        daemon = await Daemon.start(config, tmp_path / "state", metrics_port)

        expected = {
            ("meter_stopped", "m1"),
            ("reverse_energy", "m2"),
            ("voltage_loss", "m3"),
            ("current_imbalance", "m3"),  # the lost phase carries no current either
            ("current_imbalance", "m4"),
            ("clock_offset", "m5"),
            ("tamper", "m8"),
            ("no_read", "never-read"),
            ("loss_above_limit", "high"),
            ("loss_jump", "high"),
            ("negative_loss", "neg"),
        }

        async def all_found() -> bool:
            return expected <= await _active(conn)

        try:
            await wait_until(all_found, 150, "every seeded condition's exception")
        except AssertionError:
            found = await _active(conn)
            logs = [
                r for r in daemon.records if "exception" in str(r.get("msg")) or r.get("level") == "ERROR"
            ]
            raise AssertionError(
                f"missing {expected - found}, found besides {found - expected};"
                f" {logs[-5:]} {daemon.other_lines[-5:]}"
            ) from None
        assert await _active(conn) == expected
        evidence = json.loads(
            await conn.fetchval(
                "SELECT evidence::text FROM exceptions x JOIN areas a ON a.id = x.area_id"
                " WHERE x.rule = 'loss_above_limit'"
            )
        )
        assert evidence["loss_pct"] == 30 and evidence["limit_pct"] == 10
        clock = json.loads(
            await conn.fetchval("SELECT evidence::text FROM exceptions WHERE rule = 'clock_offset'")
        )
        assert abs(clock["drift_s"] - 900) < 5
        opened = await daemon.metric('headend_exceptions{rule="current_imbalance",state="open"}')
        assert opened == 2

        # on demand: m6 draws eight times its load, m7's registers are cleared, m1 runs again
        await daemon.close()
        spiking.load_scale *= 8
        bus.meters[7].model.registers = Registers()
        bus.meters[1].model.condition = MeterCondition()
        daemon = await Daemon.start(config, tmp_path / "state", metrics_port)

        async def second_round() -> bool:
            active = await _active(conn)
            closed = await conn.fetchval(
                "SELECT count(*) FROM exceptions WHERE rule = 'meter_stopped' AND state = 'auto_closed'"
            )
            return {("consumption_spike", "m6"), ("register_backwards", "m7")} <= active and closed == 1

        await wait_until(second_round, 150, "the spike, the backwards register and the stopped meter closed")
        spike = json.loads(
            await conn.fetchval("SELECT evidence::text FROM exceptions WHERE rule = 'consumption_spike'")
        )
        assert spike["recent_kwh"] > 4 * spike["usual_kwh"]
        assert {s for r, s in await _active(conn) if r == "consumption_spike"} == {"m6"}
        assert {s for r, s in await _active(conn) if r == "register_backwards"} == {"m7"}
        reverse = await conn.fetch("SELECT count FROM exceptions WHERE rule = 'reverse_energy'")
        assert len(reverse) == 1 and reverse[0]["count"] > 1  # counted again across the restart
        trail = await conn.fetch(
            "SELECT actor, action FROM audit_log WHERE entity = 'exception'"
            " AND entity_id = (SELECT id::text FROM exceptions WHERE rule = 'meter_stopped') ORDER BY id"
        )
        assert [(t["actor"], t["action"]) for t in trail] == [
            ("system", "exception.open"),
            ("system", "exception.auto_closed"),
        ]

        async def closed_in_metrics() -> bool:
            assert daemon is not None
            return await daemon.metric('headend_exceptions{rule="meter_stopped",state="auto_closed"}') == 1

        await wait_until(closed_in_metrics, 30, "the auto-closed exception in /metrics")
    finally:
        if daemon is not None:
            await daemon.close()
        await conn.close()
        await bus.stop()
