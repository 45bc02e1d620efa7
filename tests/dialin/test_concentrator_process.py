"""``headend run`` with a ``gdw1376`` listener as a real process reads the meters behind a concentrator
that dials in (``headend sim concentrator --connect``), and ``headend read gdw1376://… --listen`` reads
through the same concentrator once the daemon is gone."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path

import asyncpg
import pytest

from tests.concentrator.support import ADDRESS
from tests.dialin.test_cli import spawn
from tests.dialin.test_daemon_process import eventually, metric
from tests.engine.test_daemon_process import wait_for_log
from tests.support import cli
from tests.support.cli import cli_env, finish, stop
from tests.support.operators import import_inventory_cli
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(180)

ENERGY_SQL = (
    "SELECT m.address, count(*) AS n FROM readings r JOIN meters m ON m.id = r.meter_id"
    " JOIN quantities q ON q.id = r.quantity_id WHERE q.name = 'energy_import_kwh' GROUP BY 1"
)


async def test_daemon_reads_meters_behind_a_concentrator_that_dials_in(pg_dsn: str, tmp_path: Path) -> None:
    listen_port, metrics_port = free_port(), free_port()
    sim = await spawn(
        "sim", "concentrator", "--connect", f"127.0.0.1:{listen_port}", "--address", ADDRESS,
        "--meters", "2", "--latency-ms", "20", "--heartbeat", "5", "--json",
    )  # fmt: skip
    proc: subprocess.Popen[str] | None = None
    try:
        assert sim.stdout is not None
        described = json.loads(await asyncio.wait_for(sim.stdout.readline(), 60))
        meters = described["meters"]
        inventory = tmp_path / "inv.toml"
        lines = ['[[channels]]\nname = "conc"\nurl = "gdw1376://' + ADDRESS + '"\n']
        for meter in meters:
            lines.append(
                f'[[meters]]\nchannel = "conc"\nprotocol = "dlt645-2007"\naddress = "{meter["address"]}"\n'
                f'model = "dlt645-generic"\nport = {meter["port"]}\npn = {meter["pn"]}\n'
            )
        inventory.write_text("\n".join(lines))
        imported = import_inventory_cli(pg_dsn, inventory)
        assert imported.returncode == 0, imported.stderr

        config = tmp_path / "headend.toml"
        config.write_text(
            f'[database]\ndsn = "{pg_dsn}"\nspool_dir = "{tmp_path / "spool"}"\n'
            '[polling]\ninterval = "5s"\noffset = "1s"\ninventory_reload = "1h"\n'
            '[read_plans.default]\nquantities = ["energy_import_kwh"]\n'
            "[backfill]\nenabled = false\n[clock]\nenabled = false\n[events]\nenabled = false\n"
            f'[metrics]\nport = {metrics_port}\n[logging]\nformat = "json"\n'
            f'[[listen.listeners]]\naddress = "127.0.0.1:{listen_port}"\nkind = "gdw1376"\n'
        )
        proc = cli.start(
            "run", "--config", str(config), env=cli_env(HEADEND_STATE_DIR=str(tmp_path / "state"))
        )
        assert proc.stderr is not None
        await asyncio.to_thread(wait_for_log, proc.stderr, lambda r: r["msg"] == "engine started")

        async def stored() -> dict[str, int]:
            conn = await asyncpg.connect(pg_dsn)
            try:
                return {r["address"]: r["n"] for r in await conn.fetch(ENERGY_SQL)}
            finally:
                await conn.close()

        async def every_meter_stored() -> bool:
            return set(await stored()) == {m["address"] for m in meters}

        await wait_until(every_meter_stored, 60, "readings of every meter through the concentrator")
        await eventually(lambda: metric(metrics_port, 'headend_channel_offline{channel="conc"}') == 0.0)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0

        # the field command listens on the same address: the concentrator redials and is read there
        target = meters[1]
        read = (
            "read", f"gdw1376://{ADDRESS}", "--listen", f"127.0.0.1:{listen_port}", "--wait", "60",
            "-a", target["address"], "--port", str(target["port"]), "--pn", str(target["pn"]),
            "energy_import_kwh", "--json",
        )  # fmt: skip
        code, out, err = await finish(await spawn(*read))
        assert code == 0, err
        assert json.loads(out)["values"]["energy_import_kwh"] > 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        await stop(sim)


async def test_listen_shows_a_concentrator_by_its_login_and_keeps_it_with_confirmed_heartbeats() -> None:
    """`headend listen --kind gdw1376` confirms the login and heartbeats (a real concentrator logs in
    again and again otherwise, and never heartbeats) and prints each heartbeat."""
    port = free_port()
    listen = await spawn("listen", f"127.0.0.1:{port}", "--kind", "gdw1376", "--json")
    sim = await spawn(
        "sim", "concentrator", "--connect", f"127.0.0.1:{port}", "--address", ADDRESS,
        "--meters", "1", "--latency-ms", "0", "--heartbeat", "0.2", "--json",
    )  # fmt: skip
    events: list[dict[str, object]] = []
    try:
        assert listen.stdout is not None
        while not events or events[-1]["event"] != "heartbeat" or events[-1]["heartbeats"] != 3:
            line = await asyncio.wait_for(listen.stdout.readline(), 60)
            assert line, "listen exited early"
            events.append(json.loads(line))
    finally:
        await stop(sim)
        code, _, err = await stop(listen)
    held = [e for e in events if e["event"] == "held"]
    assert len(held) == 1  # one connection, one login: it was confirmed
    assert held[0]["identity"] == ADDRESS and str(held[0]["peer"]).startswith("127.0.0.1:")
    assert [e["heartbeats"] for e in events if e["event"] == "heartbeat"] == [1, 2, 3]
    assert code == 0 and "Traceback" not in err
