"""A register going backwards while ``headend run`` polls: a simulated meter is cleared (电表清零, its
registers back to zero) and the seeded plan drops the driver's second read of the next three cycles, so
the driver does not believe the lower value and discards it. Each discard is kept as a
``register_went_back`` event and counted; the rules pass opens ``register_backwards`` from it in the
running daemon (no restart), and no reading below the last accepted value is stored until the meter
says it twice."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg

from simulators.bus import BusSpec, start_bus
from tests.support.daemons import Daemon
from tests.support.operators import import_inventory_cli
from tests.support.ports import free_port
from tests.support.waiting import wait_until

CLEARED_AFTER = 3  # replies (one per cycle: one meter, one register) answered before the clear
# each cycle after the clear: reply 2k+3 reads the low value, 2k+4 (the re-read) is dropped; k = 0, 1, 2
DROPPED = (4, 6, 8)


def _config(path: Path, dsn: str, tmp_path: Path, metrics_port: int) -> Path:
    path.write_text(
        f'[database]\ndsn = "{dsn}"\nspool_dir = "{tmp_path / "spool"}"\n'
        '[polling]\ninterval = "2s"\ninventory_reload = "1h"\n'
        '[read_plans.default]\nquantities = ["energy_import_kwh"]\n'
        "[backfill]\nenabled = false\n[events]\nenabled = false\n[clock]\nenabled = false\n"
        '[timeouts]\ninitial = "1s"\nmaximum = "2s"\n'
        '[exceptions]\nenabled = true\nrules = ["register_backwards"]\nwindow = "1h"\n'
        f'[metrics]\nport = {metrics_port}\n[logging]\nformat = "json"\n'
    )
    return path


async def test_a_register_read_lower_and_not_believed_opens_its_exception(
    pg_dsn: str, tmp_path: Path
) -> None:
    plan = ",".join(f"no_reply@{n}" for n in DROPPED)
    bus = await start_bus(BusSpec(meters=1, seed=2425, faults=plan))
    meter = bus.meters[0]
    conn = await asyncpg.connect(pg_dsn)
    daemon: Daemon | None = None
    try:
        inventory = tmp_path / "inv.toml"
        inventory.write_text(  # no channel retry: a dropped reply is the driver's failed re-read
            f'[[channels]]\nname = "bus"\nurl = "{bus.url}?retries=0"\n'
            f'[[meters]]\nchannel = "bus"\nprotocol = "dlt645-2007"\naddress = "{meter.address}"\n'
            'model = "dlt645-generic"\nname = "m0"\n'
        )
        assert import_inventory_cli(pg_dsn, inventory).returncode == 0
        port = free_port()
        daemon = await Daemon.start(
            _config(tmp_path / "h.toml", pg_dsn, tmp_path, port), tmp_path / "s", port
        )

        stored = "SELECT count(*) FROM readings"

        async def three_stored() -> bool:
            return bool(await conn.fetchval(stored) >= CLEARED_AFTER)

        await wait_until(three_stored, 30, "three cycles read and stored", 0.005)
        assert bus.faults.replies == CLEARED_AFTER  # cleared between two cycles
        meter.model.clear()
        last = await conn.fetchval("SELECT value FROM readings ORDER BY ts DESC LIMIT 1")
        assert await conn.fetchval(stored) == CLEARED_AFTER

        async def opened() -> bool:
            return bool(
                await conn.fetchval("SELECT count(*) FROM exceptions WHERE rule = 'register_backwards'")
            )

        await wait_until(opened, 30, "the register_backwards exception")
        evidence = json.loads(await conn.fetchval("SELECT evidence::text FROM exceptions"))
        assert evidence["stored"] is False and evidence["previous"] == last and evidence["value"] < 0.1
        assert await conn.fetchval("SELECT count(*) FROM readings WHERE value < $1", last) == 0

        # the fourth read after the clear is believed (said twice) and stored, VEE's to judge
        await wait_until(lambda: bus.faults.replies >= 11, 30, "the register read twice alike")
        await wait_until(
            lambda: conn.fetchval("SELECT count(*) FROM readings WHERE value < $1", last),
            10,
            "the low reading",
        )
        assert bus.fault_counts["no_reply"] == len(DROPPED)
        went_back = await conn.fetch(
            "SELECT occurred_at, details::text FROM events WHERE kind = 'register_went_back'"
            " ORDER BY occurred_at"
        )
        assert len(went_back) == len(DROPPED)
        for event in went_back:
            (register,) = json.loads(event["details"]).items()
            assert register[0] == "energy_import_kwh" and register[1]["previous"] == last
            assert register[1]["value"] < 0.1
        readings = await conn.fetch("SELECT ts, value, received_at FROM readings ORDER BY ts")
        assert [r["value"] < last for r in readings] == [False] * CLEARED_AFTER + [True]
        gap = (readings[-1]["ts"] - readings[-2]["ts"]).total_seconds()
        assert gap == 2 * (len(DROPPED) + 1)  # the three cycles of discards stored nothing
        assert readings[-1]["received_at"] > went_back[-1]["occurred_at"]
        assert await daemon.metric('headend_registers_went_back_total{channel="bus"}') == len(DROPPED)
        assert await conn.fetchval("SELECT count FROM exceptions") >= 1
    finally:
        if daemon is not None:
            await daemon.close()
        await conn.close()
        await bus.stop()
