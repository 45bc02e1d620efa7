"""Meter alarms through a 1376.1 concentrator: the simulated concentrator raises ERC 37 (cover open)
and ERC 10 (loss of voltage on phase B) for two of its meters, with a record when each condition
starts and one when it ends; the engine's concentrator duties read them (AFN 0E F1 on ACD) and store
each as the meter's own event of the same kind a DL/T 645 meter reports, opened once and closed by
its end record; unmapped ERCs stay the channel's terminal events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from headend.inventory import import_inventory, read_inventory
from protocols.gdw1376 import RawEvent
from protocols.gdw1376.alarms import meter_alarms
from tests.concentrator.support import engine_config, inventory_toml, listening, url_of
from tests.support.engine import engine_for
from tests.support.waiting import wait_until


async def test_erc_alarms_become_the_meters_events(pg_dsn: str, tmp_path: Path) -> None:
    plan = "alarm=#0@0.5+1:meter_cover_open,alarm=#1@0.5+1.5:voltage_loss_b"
    async with listening(meters=3, faults=plan, redial_s=0.1) as sim:
        conn = await asyncpg.connect(pg_dsn)
        await import_inventory(conn, read_inventory(inventory_toml(tmp_path / "inv.toml", url_of(sim), sim)))
        engine = engine_for(engine_config(["energy_import_kwh"]), pg_dsn, tmp_path)
        await engine.start()
        ts = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        query = (
            "SELECT m.address, e.kind, e.occurred_at, e.ended_at, e.details->>'erc' AS erc FROM events e"
            " JOIN meters m ON m.id = e.meter_id WHERE e.category = 'meter' ORDER BY e.kind"
        )

        async def closed() -> bool:
            engine.run_cycle(ts)  # answers carry ACD while records are unread: the link reads AFN 0E F1
            await engine.wait_cycles()
            rows = await conn.fetch(query)
            return len(rows) == 2 and all(r["ended_at"] is not None for r in rows)

        try:
            await wait_until(closed, 40, "both alarms stored and closed")
            for _ in range(2):  # more cycles store nothing twice
                engine.run_cycle(ts)
                await engine.wait_cycles()
            rows = await conn.fetch(query)
            terminal = await conn.fetchval("SELECT count(*) FROM events WHERE category = 'terminal'")
        finally:
            await engine.stop()
            await conn.close()
    records = [e for e in sim.events if isinstance(e, RawEvent)]
    assert [(e.erc, meter_alarms(e.erc, e.data)[0].started) for e in records if e.erc == 37] == [
        (37, True),
        (37, False),
    ]
    alarms = {
        (sim.pool.meters[a.pn - 1].address, a.kind, a.started): a.at
        for e in records
        for a in meter_alarms(e.erc, e.data)
    }
    utc = {key: (at - timedelta(hours=8)).replace(tzinfo=UTC) for key, at in alarms.items()}
    assert [(r["address"], r["kind"], r["erc"]) for r in rows] == [
        (sim.pool.meters[0].address, "meter_cover_open", "37"),
        (sim.pool.meters[1].address, "voltage_loss_b", "10"),
    ]
    for row in rows:
        assert row["occurred_at"] == utc[(row["address"], row["kind"], True)]
        assert row["ended_at"] == utc[(row["address"], row["kind"], False)]
    assert terminal == 0  # mapped alarms are the meters' events, not the channel's
