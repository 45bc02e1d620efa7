"""Load curves through the daemon's engine: a day of a simulated concentrator's 15-minute power,
voltage, current and power-factor curves stored as the meters' interval quantities, then a hole
backfilled with the same values and nothing duplicated (runs in the suite's storage mode; the
native layout with ``HEADEND_EMBEDDED_TIMESCALEDB=off``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from headend.engine.engine import Engine
from headend.inventory import import_inventory, read_inventory
from simulators.concentrator import SimConcentrator
from tests.concentrator.support import engine_config, inventory_toml, listening, url_of
from tests.support.engine import engine_for
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(180)

CURVES = ["power_kw", "voltage_a_v", "current_a_a", "pf"]
THREE_PHASE = ["power_b_kw", "reactive_power_c_kvar", "voltage_c_v", "current_b_a", "current_n_a", "pf_c"]
INTERVAL_ENERGY = ["energy_import_interval_kwh", "reactive_import_interval_kvarh"]  # F97, F98
ROWS_SQL = (
    "SELECT m.address, q.name, r.ts, r.value, r.quality FROM readings r JOIN meters m ON m.id = r.meter_id"
    " JOIN quantities q ON q.id = r.quantity_id WHERE q.name = ANY($1::text[]) ORDER BY m.address, r.ts"
)
OFFSET = timedelta(hours=8)


def _engine(pg_dsn: str, tmp_path: Path, quantities: list[str]) -> Engine:
    config = engine_config(
        quantities,
        polling={"interval": "15m", "inventory_reload": "1h"},
        backfill={"enabled": True, "lookback": "1d", "retry_every": "1h", "max_intervals_per_meter": 100},
    )
    return engine_for(config, pg_dsn, tmp_path)


async def _backfill(conn: asyncpg.Connection, engine: Engine, wanted: int) -> list[asyncpg.Record]:
    async def stored() -> bool:
        await engine.writer.flush()
        count = await conn.fetchval(
            "SELECT count(*) FROM readings r JOIN quantities q ON q.id = r.quantity_id"
            " WHERE q.name = 'voltage_a_v' AND r.quality IN ('backfilled', 'freeze')"
        )
        return bool(count >= wanted)

    await engine.start()  # every meter may have gaps at start: the missed day is backfilled
    try:
        await wait_until(stored, 120, f"{wanted} backfilled voltage points")
    finally:
        await engine.stop()
    return list(await conn.fetch(ROWS_SQL, CURVES + THREE_PHASE + INTERVAL_ENERGY + ["energy_import_kwh"]))


def _expected(sim: SimConcentrator) -> dict[tuple[str, str, datetime], float]:
    """What the meters' load profiles hold: every curve quantity at its UTC interval end, and the
    energy of each interval (the increase of the forward active and forward reactive readings)."""
    out = {}
    for meter in sim.pool.meters:
        before = None
        for record in meter.model.profile:
            ts = (record.time - OFFSET).replace(tzinfo=UTC)
            for name, value in record.curves.items():
                out[(meter.address, name, ts)] = value
            out[(meter.address, "energy_import_kwh", ts)] = record.import_kwh
            if before is not None and record.time - before.time == timedelta(minutes=15):
                imported = round(record.import_kwh, 2) - round(before.import_kwh, 2)
                forward_q = round(record.q1 + record.q2, 2) - round(before.q1 + before.q2, 2)
                out[(meter.address, "energy_import_interval_kwh", ts)] = imported
                out[(meter.address, "reactive_import_interval_kvarh", ts)] = forward_q
            before = record
    return out


async def test_a_day_of_curves_is_stored_and_a_hole_backfilled_with_the_same_values(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with listening(meters=3, three_phase=1, history_days=2) as sim:
        conn = await asyncpg.connect(pg_dsn)
        try:
            installed = datetime.now(UTC) - timedelta(days=1)
            inventory = inventory_toml(tmp_path / "inv.toml", url_of(sim), sim, installed_at=installed)
            await import_inventory(conn, read_inventory(inventory))
            plan = ["energy_import_kwh", *CURVES, *THREE_PHASE, *INTERVAL_ENERGY]
            first = await _backfill(conn, _engine(pg_dsn, tmp_path, plan), 3 * 90)
            requests = sim.counts["afn_0D"]
            # a hole: six hours of the three-phase meter's curves go missing, the rest stays
            hole_end = max(r["ts"] for r in first)
            hole_start = hole_end - timedelta(hours=6)
            three_phase = sim.pool.meters[0].address
            deleted = await conn.execute(
                "DELETE FROM readings r USING meters m WHERE m.id = r.meter_id AND m.address = $1"
                " AND r.ts > $2 AND r.ts <= $3",
                three_phase,
                hole_start,
                hole_end,
            )
            assert int(deleted.split()[-1]) >= 24 * len(plan) - 24
            second = await _backfill(conn, _engine(pg_dsn, tmp_path, plan), 3 * 90)
        finally:
            await conn.close()
        expected = _expected(sim)
    assert sim.counts["afn_0D"] > requests  # the hole was asked for again
    # the plan's curves were asked, and only those (no reactive power of phases A/B, no F106/F107,
    # no F99/F100)
    asked = {int(key[7:]) for key in sim.counts if key.startswith("curve_F")}
    assert asked == {81, 83, 88, 89, 91, 92, 93, 95, 97, 98, 101, 105, 108}
    for rows in (first, second):
        keys = [(r["address"], r["name"], r["ts"]) for r in rows]
        assert len(keys) == len(set(keys))  # nothing stored twice
        by_quantity: dict[str, int] = {}
        for row in rows:
            key = (row["address"], row["name"], row["ts"])
            assert row["value"] == pytest.approx(expected[key], abs=1e-3), key
            local = row["ts"] + OFFSET
            assert row["quality"] == ("freeze" if (local.hour, local.minute) == (0, 0) else "backfilled")
            by_quantity[row["name"]] = by_quantity.get(row["name"], 0) + 1
        # a day of 15-minute points of each meter; phase B/C and the neutral only from the three-phase one
        assert by_quantity["voltage_a_v"] >= 3 * 90 and by_quantity["pf"] >= 3 * 90
        assert 90 <= by_quantity["voltage_c_v"] <= 97 and 90 <= by_quantity["current_n_a"] <= 97
        # each interval's energy of every meter (the load model consumes: not all zero)
        for name in INTERVAL_ENERGY:
            assert by_quantity[name] >= 3 * 89
            assert sum(r["value"] for r in rows if r["name"] == name) > 0
    refilled = {
        (r["name"], r["ts"]): r["value"]
        for r in second
        if r["address"] == three_phase and hole_start < r["ts"] <= hole_end
    }
    before = {
        (r["name"], r["ts"]): r["value"]
        for r in first
        if r["address"] == three_phase and hole_start < r["ts"] <= hole_end
    }
    assert refilled == before and len(refilled) >= 24 * len(plan) - 24
