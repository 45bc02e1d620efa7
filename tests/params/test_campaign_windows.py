"""Campaign windows in the daemon: a campaign whose own window is open but whose bus is in a peak
reading window of the configuration sends nothing and counts no attempt; its meters wait, to the
minute, for the end of the peak window (the station's zone chosen so that it is now about noon)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

from simulators.bus import BusSpec, start_bus
from tests.params.test_campaign_daemon import METER_PASSWORD, _config, all_day_sharp, headend, zone_at
from tests.support.daemons import Daemon
from tests.support.engine import inventory_file
from tests.support.operators import add_operators, import_inventory_cli
from tests.support.ports import free_port
from tests.support.waiting import wait_until


async def test_a_campaign_waits_out_the_peak_reading_window(pg_dsn: str, tmp_path: Path) -> None:
    bus = await start_bus(BusSpec(meters=2, seed=2503, password=METER_PASSWORD))
    set_file = all_day_sharp(tmp_path / "set.json")
    conn = await asyncpg.connect(pg_dsn)
    daemon = None
    try:
        await add_operators(conn, o5301="operator", o5302="approver", o5303="admin")
        assert (
            import_inventory_cli(pg_dsn, inventory_file(tmp_path / "inv.toml", {"bus": bus})).returncode == 0
        )
        assert headend(pg_dsn, "params", "set", "add", "s", "--file", str(set_file),
                       "--operator", "5303").returncode == 0  # fmt: skip
        switch_at = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        created = headend(pg_dsn, "params", "campaign", "create", "c3", "--set", "s",
                          "--switch-at", switch_at.isoformat(), "--channel", "bus",
                          "--window", "11:00-16:00", "--operator", "5301")  # fmt: skip
        assert created.returncode == 0, created.stderr
        shown = json.loads(headend(pg_dsn, "params", "campaign", "show", "c3", "--json").stdout)
        assert shown["windows"] == ["11:00-16:00"]
        assert headend(pg_dsn, "params", "campaign", "approve", "c3", "--operator", "5302").returncode == 0
        assert headend(pg_dsn, "params", "campaign", "start", "c3", "--operator", "5301").returncode == 0
        config = _config(tmp_path, pg_dsn, port := free_port(), 'peak_reading = ["11:00-14:00"]\n')
        zone = ZoneInfo(zone_at(12))
        daemon = await Daemon.start(config, tmp_path / "state", port)

        async def deferred() -> bool:
            later = await conn.fetchval("SELECT count(*) FROM tou_campaign_meters WHERE next_try_at > now()")
            return bool(later == 2)

        await wait_until(deferred, 60, "both meters deferred")
        opening = dt.datetime.now(zone).replace(hour=14, minute=0, second=0, microsecond=0)
        found = await conn.fetch("SELECT next_try_at, attempts, state FROM tou_campaign_meters")
        assert [(r["next_try_at"], r["attempts"], r["state"]) for r in found] == [(opening, 0, "pending")] * 2
        assert all("programming" not in m.model.event_counts for m in bus.meters)

        async def published() -> bool:
            return await daemon.metric("headend_campaign_meters", 'campaign="c3",state="pending"') == 2

        await wait_until(published, 30, "the campaign's meters in the daemon's metrics")
        assert await daemon.metric("headend_campaign_meters", 'campaign="c3"') == 2  # every other state 0
    finally:
        await conn.close()
        if daemon is not None:
            await daemon.close()
        await bus.stop()
