"""Total groups end to end as real processes: ``headend sim concentrator --config`` (its AFN 04 F14
configuration from a file) dials in to ``headend run``, whose inventory (imported with ``headend
inventory import``) names two of its total groups; the daemon backfills their curves F73..F76 and
stores them as the groups' quantities, valued as an identical simulator (same seed and members)
computes them (runs in the suite's storage mode; the native layout with
``HEADEND_EMBEDDED_TIMESCALEDB=off``)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from protocols.gdw1376 import CURVE_KINDS, CurveRequest, GroupMember, TotalGroup
from simulators.concentrator import ConcentratorSpec, SimConcentrator
from tests.concentrator.support import ADDRESS
from tests.dialin.test_cli import spawn
from tests.engine.test_daemon_process import wait_for_log
from tests.support import cli
from tests.support.cli import cli_env, stop
from tests.support.operators import import_inventory_cli
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(240)

SEED = 23
GROUPS = (
    TotalGroup(1, (GroupMember(1), GroupMember(2), GroupMember(3, subtract=True))),
    TotalGroup(2, (GroupMember(2), GroupMember(3))),
)
CONFIG = """
[[total_groups]]
number = 1
members = [1, 2, { pn = 3, subtract = true }]

[[total_groups]]
number = 2
members = [2, 3]
"""
QUANTITIES = {
    73: "group_power_kw",
    74: "group_reactive_power_kvar",
    75: "group_energy_kwh",
    76: "group_reactive_energy_kvarh",
}
ROWS_SQL = (
    "SELECT m.address, q.name, r.ts, r.value, r.quality FROM readings r JOIN meters m ON m.id = r.meter_id"
    " JOIN quantities q ON q.id = r.quantity_id WHERE m.protocol = 'gdw1376-group' ORDER BY 1, 2, 3"
)
STEP = timedelta(minutes=15)


async def _rows(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(ROWS_SQL))
    finally:
        await conn.close()


async def test_daemon_stores_the_total_groups_of_a_concentrator_that_dials_in(
    pg_dsn: str, tmp_path: Path
) -> None:
    listen_port, metrics_port = free_port(), free_port()
    (tmp_path / "sim.toml").write_text(CONFIG)
    sim = await spawn(
        "sim", "concentrator", "--connect", f"127.0.0.1:{listen_port}", "--address", ADDRESS,
        "--meters", "3", "--latency-ms", "20", "--seed", str(SEED), "--history-days", "2",
        "--config", str(tmp_path / "sim.toml"), "--json",
    )  # fmt: skip
    proc: subprocess.Popen[str] | None = None
    try:
        assert sim.stdout is not None
        described = json.loads(await asyncio.wait_for(sim.stdout.readline(), 60))
        assert [g["number"] for g in described["total_groups"]] == [1, 2]
        installed = (datetime.now(UTC) - timedelta(hours=12)).isoformat()
        lines = ['[[channels]]\nname = "conc"\nurl = "gdw1376://' + ADDRESS + '"\n']
        for meter in described["meters"]:
            lines.append(
                f'[[meters]]\nchannel = "conc"\nprotocol = "dlt645-2007"\naddress = "{meter["address"]}"\n'
                f'model = "dlt645-generic"\nport = {meter["port"]}\npn = {meter["pn"]}\n'
            )
        for number in (1, 2):
            lines.append(
                f'[[meters]]\nchannel = "conc"\nprotocol = "gdw1376-group"\naddress = "{number}"\n'
                f'model = "gdw1376-total-group"\ninstalled_at = "{installed}"\n'
            )
        inventory = tmp_path / "inv.toml"
        inventory.write_text("\n".join(lines))
        imported = import_inventory_cli(pg_dsn, inventory)
        assert imported.returncode == 0, imported.stderr
        config = tmp_path / "headend.toml"
        config.write_text(
            f'[database]\ndsn = "{pg_dsn}"\nspool_dir = "{tmp_path / "spool"}"\n'
            '[polling]\ninterval = "15m"\ninventory_reload = "1h"\n'
            '[read_plans.default]\nquantities = ["energy_import_kwh"]\n'
            f"[read_plans.gdw1376-total-group]\nquantities = {json.dumps(list(QUANTITIES.values()))}\n"
            '[backfill]\nenabled = true\nlookback = "1d"\nretry_every = "3s"\nmax_intervals_per_meter = 100\n'
            "[clock]\nenabled = false\n[events]\nenabled = false\n"
            f'[metrics]\nport = {metrics_port}\n[logging]\nformat = "json"\n'
            f'[[listen.listeners]]\naddress = "127.0.0.1:{listen_port}"\nkind = "gdw1376"\n'
        )
        proc = cli.start(
            "run", "--config", str(config), env=cli_env(HEADEND_STATE_DIR=str(tmp_path / "state"))
        )
        assert proc.stderr is not None
        await asyncio.to_thread(wait_for_log, proc.stderr, lambda r: r["msg"] == "engine started")
        # the concentrator may dial in after the daemon's first gap pass: a later one (every 3 s) backfills

        async def half_a_day() -> bool:
            rows = await _rows(pg_dsn)
            return all(sum(1 for r in rows if r["address"] == str(n)) >= 4 * 44 for n in (1, 2))

        await wait_until(half_a_day, 150, "half a day of both groups' curves")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        rows = await _rows(pg_dsn)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        await stop(sim)
    # the same concentrator in this process: same seed, meters and groups, so the same load model
    twin = SimConcentrator(ConcentratorSpec(meters=3, seed=SEED, history_days=2, total_groups=GROUPS))
    first = min(r["ts"] for r in rows)
    points = int((max(r["ts"] for r in rows) - first) / STEP) + 1
    local_first = (first + timedelta(hours=8)).replace(tzinfo=None)
    expected = {}
    for group in GROUPS:
        for fn, name in QUANTITIES.items():
            curve = twin.groups.curve(
                group.number, fn, CurveRequest(local_first, 1, points), twin.pool.profile_of
            )
            assert curve is not None
            field = CURVE_KINDS[fn].field  # as the frame carries it
            for index, value in enumerate(curve.values):
                if value is not None:
                    expected[(str(group.number), name, first + index * STEP)] = field.value_of(
                        field.bytes_of(value)
                    )
    keys = [(r["address"], r["name"], r["ts"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert {r["quality"] for r in rows} == {"backfilled"}
    for row in rows:
        key = (row["address"], row["name"], row["ts"])
        assert row["value"] == pytest.approx(expected[key], abs=1e-6), key
    for number in ("1", "2"):
        assert {r["name"] for r in rows if r["address"] == number} == set(QUANTITIES.values())
        assert any(r["value"] > 0 for r in rows if r["address"] == number and r["name"] == "group_power_kw")
