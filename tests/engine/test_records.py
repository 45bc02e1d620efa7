"""Per-cycle success rates (采集成功率) and meter events as stored in the real schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from headend.engine.cycle import CycleStats
from headend.engine.events import MeterEvent, events_record
from headend.engine.model import load_inventory
from headend.inventory import import_inventory, read_inventory

T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


async def _two_channels(conn: asyncpg.Connection, tmp_path: Path) -> None:
    inv = tmp_path / "inv.toml"
    inv.write_text(
        '[[channels]]\nname = "a"\nurl = "tcp://127.0.0.1:1"\n[[channels]]\nname = "b"\nurl = "tcp://127.0.0.1:2"\n'
        '[[meters]]\nchannel = "a"\nprotocol = "dlt645-2007"\naddress = "1"\nmodel = "dlt645-generic"\n'
        '[[meters]]\nchannel = "b"\nprotocol = "dlt645-2007"\naddress = "2"\nmodel = "dlt645-generic"\n'
    )
    await import_inventory(conn, read_inventory(inv))


async def test_cycle_rows_and_overall_success_rate(pg_dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await _two_channels(conn, tmp_path)
        a = CycleStats(1, "a", T0, 900.0, busy_at_start=10.0, due=100, succeeded=97, readings=291)
        b = CycleStats(2, "b", T0, 900.0, busy_at_start=0.0, due=50, succeeded=50, readings=150)
        a.finish(busy_now=10.0 + 1170.0)  # 1170 s of bus time in a 900 s interval
        b.finish(busy_now=90.0)
        await a.record().store(conn)
        await b.record().store(conn)
        a.succeeded = 98  # a late result re-stores the same cycle row
        await a.record().store(conn)
        rows = await conn.fetch("SELECT channel_id, due, succeeded, utilisation FROM read_cycles ORDER BY 1")
        assert [tuple(r)[:3] for r in rows] == [(1, 100, 98), (2, 50, 50)]
        assert abs(rows[0]["utilisation"] - 1.3) < 1e-6 and abs(rows[1]["utilisation"] - 0.1) < 1e-6
        overall = await conn.fetchrow(
            "SELECT due, succeeded, success_rate FROM read_success_rate WHERE cycle_at = $1", T0
        )
        assert (overall["due"], overall["succeeded"]) == (150, 148)
        assert float(overall["success_rate"]) == 148 / 150
    finally:
        await conn.close()


async def test_meter_events_are_stored_once(pg_dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await _two_channels(conn, tmp_path)
        meter = (await load_inventory(conn)).meters_by_channel[1][0]
        events = [
            MeterEvent("power_down", T0, T0 + timedelta(minutes=7)),
            MeterEvent(
                "relay_trip", T0 + timedelta(hours=1), details={"operator": "OP01", "energy_kwh": 12.5}
            ),
        ]
        await events_record(meter, events).store(conn)
        more = [*events, MeterEvent("relay_close", T0 + timedelta(hours=2))]
        await events_record(meter, more).store(conn)  # the two already stored are skipped
        rows = await conn.fetch(
            "SELECT kind, channel_id, ended_at, details->>'operator' AS op FROM events "
            "WHERE meter_id = $1 ORDER BY occurred_at",
            meter.id,
        )
        assert [(r["kind"], r["channel_id"], r["op"]) for r in rows] == [
            ("power_down", 1, None),
            ("relay_trip", 1, "OP01"),
            ("relay_close", 1, None),
        ]
        assert rows[0]["ended_at"] == T0 + timedelta(minutes=7)
    finally:
        await conn.close()
