"""A daemon killed (SIGKILL) in the middle of a campaign over a dial-in DTU and a Q/GDW 1376.1
concentrator, and a new one started: the DTU dials in to the new daemon's listener, the new daemon
connects to the concentrator (a terminal that listens, as the inventory names it). The DTU's meter
and the concentrator's first meter, whose writes were all acknowledged (``written``) but not read
back, are verified without a second write of any item, their attempt counters carried over; the
concentrator's second meter, which refuses the password, fails with the decoded reason. The kill
lands by a planned fault: each of the two meters stops answering right after its last write. The
DTU is away when the new daemon starts: its meter waits (no attempt counted) until it dials in."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import asyncpg
import pytest

from protocols.dlt645.tou import daily_table_di
from simulators import BusSpec, SimBus
from simulators.concentrator import ConcentratorSpec, SimConcentrator
from simulators.dtu import DtuSpec, SimDtu
from tests.params.test_campaign_daemon import METER_PASSWORD, _config, all_day_sharp, headend
from tests.support.daemons import Daemon
from tests.support.operators import add_operators, import_inventory_cli
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.long(seconds=30)]
WRITE = 0x14
IDENTITY = "DTU-2521"


def _inventory(path: Path, bus: SimBus, conc: SimConcentrator) -> Path:
    meter = bus.meters[0].address
    lines = ["[[channels]]", 'name = "dtu"', f'url = "dtu://{IDENTITY}"', ""]
    lines += ["[[meters]]", 'channel = "dtu"', 'protocol = "dlt645-2007"', f'address = "{meter}"']
    lines += ['model = "dlt645-generic"', f'meter_number = "{meter}"', ""]
    url = f"gdw1376+tcp://127.0.0.1:{conc.bound_port}?address={conc.address.key}"
    lines += ["[[channels]]", 'name = "conc"', f'url = "{url}"', ""]
    for pn, m in enumerate(conc.pool.meters, 1):
        lines += ["[[meters]]", 'channel = "conc"', 'protocol = "dlt645-2007"', f'address = "{m.address}"']
        lines += ['model = "dlt645-generic"', f"port = {conc.pool.port_of[m.address]}", f"pn = {pn}", ""]
    path.write_text("\n".join(lines))
    return path


async def test_a_daemon_killed_mid_campaign_over_a_dtu_and_a_concentrator(
    pg_dsn: str, tmp_path: Path
) -> None:
    bus = SimBus(BusSpec(meters=1, seed=2521, transport="carried", password=METER_PASSWORD))
    conc = SimConcentrator(
        ConcentratorSpec(port=0, listen=True, meters=2, ports=2, latency_ms=5, line_timing=False, seed=2522)
    )
    await conc.start()
    dtu_meter, (conc_meter, refusing) = bus.meters[0], conc.pool.meters
    conc_meter.passwords = {2: METER_PASSWORD}  # the other keeps a password the secrets file does not give
    for meter in (dtu_meter, conc_meter, refusing):
        meter.model.tou.write(daily_table_di(1, 1), [{"start": "00:00", "tariff": 3}])
    set_file = all_day_sharp(tmp_path / "set.json")
    conn = await asyncpg.connect(pg_dsn)
    daemons: list[Daemon] = []
    dtu = None

    async def states() -> dict[str, tuple[str, str | None, int]]:
        found = await conn.fetch(
            "SELECT m.address, x.state, x.reason, x.attempts FROM tou_campaign_meters x"
            " JOIN meters m ON m.id = x.meter_id"
        )
        return {r["address"]: (r["state"], r["reason"], r["attempts"]) for r in found}

    try:
        await add_operators(conn, o5211="operator", o5212="approver", o5213="admin")
        assert import_inventory_cli(pg_dsn, _inventory(tmp_path / "inv.toml", bus, conc)).returncode == 0
        assert headend(pg_dsn, "params", "set", "add", "sharp", "--file", str(set_file),
                       "--operator", "5213").returncode == 0  # fmt: skip
        switch_local = dtu_meter.model.clock.local().replace(second=0) + dt.timedelta(hours=1)
        switch_at = switch_local.replace(tzinfo=dt.timezone(dt.timedelta(hours=8)))
        assert headend(pg_dsn, "params", "campaign", "create", "c3", "--set", "sharp",
                       "--switch-at", switch_at.isoformat(), "--channel", "dtu", "--channel", "conc",
                       "--operator", "5211").returncode == 0  # fmt: skip
        metrics_port, listen_port = free_port(), free_port()
        config = _config(tmp_path, pg_dsn, metrics_port)
        listener = f'[[listen.listeners]]\naddress = "127.0.0.1:{listen_port}"\nheartbeat = "HB"\n'
        config.write_text(config.read_text() + listener)
        daemons.append(await Daemon.start(config, tmp_path / "state", metrics_port))
        await daemons[0].wait_logged("engine started")
        spec = DtuSpec(IDENTITY, "127.0.0.1", listen_port, heartbeat=b"HB", backoff_s=0.05, max_backoff_s=0.2)
        dtu = await SimDtu(spec, bus).start()

        async def dtu_online() -> bool:  # the gauges, refreshed every 5 s: identified, and online now
            daemon = daemons[0]
            identified = await daemon.metric("headend_dialin_events", 'event="identified"')
            return identified >= 1 and await daemon.metric("headend_channel_offline", 'channel="dtu"') == 0

        await wait_until(dtu_online, 30, "the DTU connected to the daemon", interval=0.5)
        assert headend(pg_dsn, "params", "campaign", "dry-run", "c3", "--operator", "5211").returncode == 0

        async def all_read() -> bool:
            return await conn.fetchval("SELECT count(dry_run_at) FROM tou_campaign_meters") == 3

        await wait_until(all_read, 60, "the dry run of every meter")
        shown = json.loads(headend(pg_dsn, "params", "campaign", "show", "c3", "--json").stdout)["meters"]
        changes = {m["address"]: len(m["dry_run"]) for m in shown}
        assert all(n > 2 for n in changes.values()), changes
        # each acknowledges every write it needs, then stops answering: its read-back waits
        for meter in (dtu_meter, conc_meter):
            meter.offline_after_programming = changes[meter.address]

        assert headend(pg_dsn, "params", "campaign", "approve", "c3", "--operator", "5212").returncode == 0
        assert headend(pg_dsn, "params", "campaign", "start", "c3", "--operator", "5211").returncode == 0

        async def both_written() -> bool:
            found = await states()
            return all(found[m.address][0] == "written" for m in (dtu_meter, conc_meter))

        await wait_until(both_written, 60, "both meters written, not yet read back", interval=0.02)
        daemons[0].kill()  # SIGKILL: no clean stop, the read-backs never answered
        await daemons[0].proc.wait()
        await dtu.stop()  # the DTU is away (its network down) when the new daemon starts
        found = await states()
        assert found[dtu_meter.address] == found[conc_meter.address] == ("written", None, 1)
        for meter in (dtu_meter, conc_meter):
            assert meter.model.event_counts["programming"] == changes[meter.address]
            meter.model.offline = False

        daemons.append(await Daemon.start(config, tmp_path / "state", metrics_port))

        async def settled(address: str) -> bool:
            return (await states())[address][0] in ("verified", "failed")

        # the concentrator's meters settle; the DTU's meter waits for its DTU, no attempt counted
        for meter in (conc_meter, refusing):
            await wait_until(lambda m=meter: settled(m.address), 60, f"meter {meter.address} settled")
        assert (await states())[dtu_meter.address] == ("written", None, 1)
        dtu = await SimDtu(spec, bus).start()  # it dials in to the new daemon

        async def finished() -> bool:
            return await conn.fetchval("SELECT state FROM tou_campaigns WHERE name = 'c3'") == "done"

        await wait_until(finished, 60, "the campaign done")
        assert await states() == {
            dtu_meter.address: ("verified", None, 2),
            conc_meter.address: ("verified", None, 2),
            refusing.address: ("failed", "meter refused: password error", 1),
        }
        # every item that differed was written exactly once, across the kill and the new attempt:
        # as many write frames reached each meter as it changed items (one refused at the other)
        for meter in (dtu_meter, conc_meter):
            assert meter.model.event_counts["programming"] == changes[meter.address]
            assert meter.model.tou.daily_tables[(2, 1)] == [{"start": "00:00", "tariff": 1}]
        assert bus.requests[WRITE] == changes[dtu_meter.address]
        at_port = {m.address: conc.pool.responders[conc.pool.port_of[m.address]] for m in conc.pool.meters}
        assert at_port[conc_meter.address].requests[WRITE] == changes[conc_meter.address]
        assert at_port[refusing.address].requests[WRITE] == 1
        assert "programming" not in refusing.model.event_counts
    finally:
        await conn.close()
        for daemon in daemons:
            await daemon.close()
        if dtu is not None:
            await dtu.stop()
        await conc.stop()
