"""A daemon killed (SIGKILL) in the middle of a campaign, and a new one started: the meter whose
writes were all acknowledged (``written``) but not read back is verified by the new daemon without a
second write of any item, its attempt counter carried over; the other meter is verified once. The kill
lands by a seeded fault: the simulated meter stops answering right after its last write."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import asyncpg

from protocols.dlt645.tou import daily_table_di
from simulators.bus import BusSpec, start_bus
from tests.params.test_campaign_daemon import METER_PASSWORD, _config, all_day_sharp, headend
from tests.support.daemons import Daemon
from tests.support.engine import inventory_file
from tests.support.operators import add_operators, import_inventory_cli
from tests.support.ports import free_port
from tests.support.waiting import wait_until


async def test_a_daemon_killed_mid_campaign_leaves_nothing_written_twice(pg_dsn: str, tmp_path: Path) -> None:
    bus = await start_bus(BusSpec(meters=2, seed=2502, password=METER_PASSWORD))
    for meter in bus.meters:
        meter.model.tou.write(daily_table_di(1, 1), [{"start": "00:00", "tariff": 3}])
    set_file = all_day_sharp(tmp_path / "set.json")
    conn = await asyncpg.connect(pg_dsn)
    daemons: list[Daemon] = []
    addresses = [m.address for m in bus.meters]
    models = [m.model for m in bus.meters]

    async def state_of(index: int) -> tuple[str, str | None, int]:
        found = await conn.fetchrow(
            "SELECT x.state, x.reason, x.attempts FROM tou_campaign_meters x"
            " JOIN meters m ON m.id = x.meter_id WHERE m.address = $1",
            addresses[index],
        )
        assert found is not None
        return found["state"], found["reason"], found["attempts"]

    try:
        await add_operators(conn, o5201="operator", o5202="approver", o5203="admin")
        assert (
            import_inventory_cli(pg_dsn, inventory_file(tmp_path / "inv.toml", {"bus": bus})).returncode == 0
        )
        assert headend(pg_dsn, "params", "set", "add", "sharp", "--file", str(set_file),
                       "--operator", "5203").returncode == 0  # fmt: skip
        switch_local = models[0].clock.local().replace(second=0) + dt.timedelta(hours=1)
        switch_at = switch_local.replace(tzinfo=dt.timezone(dt.timedelta(hours=8)))
        assert headend(pg_dsn, "params", "campaign", "create", "c2", "--set", "sharp",
                       "--switch-at", switch_at.isoformat(), "--channel", "bus",
                       "--operator", "5201").returncode == 0  # fmt: skip
        config = _config(tmp_path, pg_dsn, free_port())
        port = int(config.read_text().split("[metrics]\nport = ")[1].split("\n")[0])
        daemons.append(await Daemon.start(config, tmp_path / "state", port))
        assert headend(pg_dsn, "params", "campaign", "dry-run", "c2", "--operator", "5201").returncode == 0

        async def all_read() -> bool:
            return await conn.fetchval("SELECT count(dry_run_at) FROM tou_campaign_meters") == 2

        await wait_until(all_read, 60, "the dry run of every meter")
        shown = json.loads(headend(pg_dsn, "params", "campaign", "show", "c2", "--json").stdout)["meters"]
        changes = {m["address"]: len(m["dry_run"]) for m in shown}
        assert all(n > 2 for n in changes.values()), changes
        # meter 0 acknowledges every write it needs, then stops answering: its read-back waits
        bus.meters[0].offline_after_programming = changes[addresses[0]]

        assert headend(pg_dsn, "params", "campaign", "approve", "c2", "--operator", "5202").returncode == 0
        assert headend(pg_dsn, "params", "campaign", "start", "c2", "--operator", "5201").returncode == 0

        async def written() -> bool:
            return (await state_of(0))[0] == "written"

        await wait_until(written, 60, "meter 0 written, not yet read back", interval=0.02)
        daemons[0].kill()  # SIGKILL: no clean stop, the read-back never answered
        await daemons[0].proc.wait()
        assert await state_of(0) == ("written", None, 1)
        assert models[0].event_counts["programming"] == changes[addresses[0]]

        models[0].offline = False
        daemons.append(await Daemon.start(config, tmp_path / "state", port))

        # the progress redrawn (plain text, not a terminal) until the campaign is done
        watched = await asyncio.to_thread(
            headend, pg_dsn, "params", "campaign", "show", "c2", "--watch", "--every", "0.2"
        )
        assert watched.returncode == 0, watched.stderr
        lines = watched.stdout.splitlines()
        assert lines[0] == "campaign c2: running"
        assert lines[-3:] == ["campaign c2: done", f"[{'#' * 30}] 2/2 meters settled (100%)",
                              "pending 0  written 0  verified 2  skipped 0  failed 0"]  # fmt: skip
        assert await state_of(0) == ("verified", None, 2)
        assert await state_of(1) == ("verified", None, 1)
        # every item that differed was written exactly once, across the kill and the new attempt
        for index in (0, 1):
            assert models[index].event_counts["programming"] == changes[addresses[index]]
            assert models[index].tou.daily_tables[(2, 1)] == [{"start": "00:00", "tariff": 1}]
    finally:
        await conn.close()
        for daemon in daemons:
            await daemon.close()
        await bus.stop()
