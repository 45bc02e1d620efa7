"""The daemon's engine reading DL/T 645 meters through a simulated 1376.1 concentrator over real TCP,
storing into real PostgreSQL: native and forwarded reads, backfill of missed days, ACD events,
archive disagreement, lost/late answers and a dropped connection."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import asyncpg
import pytest

from headend.engine.engine import Engine
from headend.inventory import import_inventory, read_inventory
from headend.transport.concentrator import ConcentratorLink
from simulators.bus import DEFAULT_PASSWORD
from tests.concentrator.support import engine_config, inventory_toml, listening, url_of
from tests.support.engine import engine_for
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

ENERGY_SQL = (
    "SELECT m.address, r.ts, r.value, r.quality FROM readings r JOIN meters m ON m.id = r.meter_id"
    " JOIN quantities q ON q.id = r.quantity_id WHERE q.name = $1 ORDER BY m.address, r.ts"
)


def make_engine(config: object, pg_dsn: str, tmp_path: Path) -> Engine:
    return engine_for(config, pg_dsn, tmp_path)  # type: ignore[arg-type]


async def test_cycles_store_native_energy_and_forwarded_voltage_for_the_right_meter(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with listening(meters=8) as sim:
        conn = await asyncpg.connect(pg_dsn)
        await import_inventory(conn, read_inventory(inventory_toml(tmp_path / "inv.toml", url_of(sim), sim)))
        engine = make_engine(engine_config(["energy_import_kwh", "voltage_a_v"]), pg_dsn, tmp_path)
        await engine.start()
        ts = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        try:
            engine.run_cycle(ts)
            await engine.wait_cycles()
            await engine.writer.flush()
            energy = await conn.fetch(ENERGY_SQL, "energy_import_kwh")
            voltage = await conn.fetch(ENERGY_SQL, "voltage_a_v")
        finally:
            await engine.stop()
            await conn.close()
        collected = {address: reading.total for address, reading in sim.pool.collected.items()}
        assert {r["address"]: r["value"] for r in energy} == pytest.approx(collected)
        assert all(r["ts"] == ts and r["quality"] == "actual" for r in energy + voltage)
        assert len(voltage) == 8 and all(200 < r["value"] < 260 for r in voltage)
        # energy of all 8 meters came from one batched AFN 0C F129 and their voltages from one batched
        # AFN 0C F25: nothing was forwarded to a meter
        assert sim.counts["afn_0C"] == 2
        assert sim.counts["forwards"] == 0


async def test_backfill_after_an_outage_takes_midnight_freezes_and_curve_points(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with listening(meters=3, history_days=4) as sim:
        conn = await asyncpg.connect(pg_dsn)
        now = datetime.now(UTC)
        installed = now - timedelta(days=2)
        inventory = inventory_toml(tmp_path / "inv.toml", url_of(sim), sim, installed_at=installed)
        await import_inventory(conn, read_inventory(inventory))
        config = engine_config(
            ["energy_import_kwh"],
            backfill={"enabled": True, "lookback": "2d", "retry_every": "1h", "max_intervals_per_meter": 96},
        )
        engine = make_engine(config, pg_dsn, tmp_path)
        await engine.start()  # backfills the two missed days at start

        async def filled() -> bool:
            await engine.writer.flush()
            count = await conn.fetchval(
                "SELECT count(*) FROM readings WHERE quality IN ('freeze', 'backfilled')"
            )
            return bool(count >= 3 * 40)

        try:
            await wait_until(filled, 60, "backfilled readings")
            rows = await conn.fetch(ENERGY_SQL, "energy_import_kwh")
        finally:
            await engine.stop()
            await conn.close()
    by_meter: dict[str, dict[datetime, tuple[float, str]]] = {}
    for row in rows:
        by_meter.setdefault(row["address"], {})[row["ts"]] = (row["value"], row["quality"])
    offset = timedelta(hours=8)
    for meter in sim.pool.meters:
        stored = by_meter[meter.address]
        freezes = {f.time - offset: f.import_values[0] for f in meter.model.daily}
        profile = {p.time - offset: p.import_kwh for p in meter.model.profile}
        midnights = [ts for ts, (_v, q) in stored.items() if q == "freeze"]
        assert len(midnights) >= 2  # one freeze per missed day
        for ts, (value, quality) in stored.items():
            local = ts + offset
            if quality == "freeze":
                assert local.time() == time(0, 0)
                assert value == pytest.approx(freezes[ts.replace(tzinfo=None)], abs=1e-4)
            else:
                assert quality == "backfilled"
                assert value == pytest.approx(profile[ts.replace(tzinfo=None)], abs=0.01)
    # the freezes of one day came for all three meters in one AFN 0D request, the curves per meter;
    # an energy-only plan asks the energy curve alone
    assert sim.counts["afn_0D"] < 3 * 2 + 3 * 3
    asked = {key for key in sim.counts if key.startswith("curve_F")}
    assert asked == {"curve_F101"}


async def test_lost_and_late_answers_and_a_dropped_connection_lose_no_reading_and_misattribute_none(
    pg_dsn: str, tmp_path: Path
) -> None:
    # lost and late replies planned by request index from the seed, the connection dropped at 2 s;
    # meters 1 and 4 never collected (their energy is forwarded)
    faults = "lost=0.15,late=0.15,late_delay=0.6,drop=2,ee=#1,ee=#4"
    seed = 6  # its plan puts late replies on native requests too (forwarded ones are allowed longer)
    async with listening(meters=6, faults=faults, seed=seed) as sim:
        conn = await asyncpg.connect(pg_dsn)
        url = url_of(sim, turnaround_ms=400, retries=3)
        await import_inventory(conn, read_inventory(inventory_toml(tmp_path / "inv.toml", url, sim)))
        engine = make_engine(engine_config(["energy_import_kwh", "voltage_a_v"]), pg_dsn, tmp_path)
        await engine.start()
        base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
        stamps = [base + timedelta(hours=k) for k in range(5)]
        try:
            for ts in stamps:
                engine.run_cycle(ts)
                await engine.wait_cycles()
            await engine.writer.flush()
            energy = await conn.fetch(ENERGY_SQL, "energy_import_kwh")
            voltage = await conn.fetch(ENERGY_SQL, "voltage_a_v")
            link = next(iter(engine.workers.values())).channel
            assert isinstance(link, ConcentratorLink)
            stats = link.stats
        finally:
            await engine.stop()
            await conn.close()
    planned = Counter(sim.faults.fault_at(i, seed + 7) for i in range(sim.requests_served))
    assert sim.faults.counts == {"lost": planned["lost"], "late": planned["late"], "drop": 1}
    assert planned["lost"] > 0 and planned["late"] > 0
    assert stats.late_frames > 0 and stats.connects >= 2
    # every meter at every interval, once, with its own values
    meters = {m.address: m for m in sim.pool.meters}
    assert sorted((r["address"], r["ts"]) for r in energy) == sorted((a, ts) for a in meters for ts in stamps)
    assert sorted((r["address"], r["ts"]) for r in voltage) == sorted(
        (a, ts) for a in meters for ts in stamps
    )
    forwarded = {sim.pool.meters[1].address, sim.pool.meters[4].address}
    for row in energy:
        if row["address"] in forwarded:  # read from the meter itself: its own register (they differ by 100s)
            register = meters[row["address"]].model.registers.import_kwh
            assert register - 1.0 <= row["value"] <= register + 0.01
        else:  # the value the concentrator collected for that meter
            assert row["value"] == pytest.approx(sim.pool.collected[row["address"]].total)
    assert all(200 < row["value"] < 260 for row in voltage)


async def test_acd_after_a_power_cut_stores_the_concentrators_power_event_once(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with listening(meters=2, faults="power_cut=1+0.5", redial_s=0.1) as sim:
        conn = await asyncpg.connect(pg_dsn)
        await import_inventory(conn, read_inventory(inventory_toml(tmp_path / "inv.toml", url_of(sim), sim)))
        engine = make_engine(engine_config(["energy_import_kwh"]), pg_dsn, tmp_path)
        await engine.start()
        ts = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)

        async def stored() -> bool:
            engine.run_cycle(ts)  # the answers after the cut carry ACD: the link reads AFN 0E F1
            await engine.wait_cycles()
            return bool(await conn.fetchval("SELECT count(*) FROM events WHERE category = 'terminal'"))

        try:
            await wait_until(stored, 30, "the terminal power event")
            for _ in range(3):  # more cycles (and ACD-free answers) store nothing twice
                engine.run_cycle(ts)
                await engine.wait_cycles()
            rows = await conn.fetch(
                "SELECT kind, channel_id, meter_id, occurred_at, ended_at, details FROM events"
            )
            channel_id = await conn.fetchval("SELECT id FROM channels WHERE name = 'conc-1'")
            reported = engine.metrics.registry.get_sample_value(
                "headend_concentrator_events_total", {"channel": "conc-1"}
            )
        finally:
            await engine.stop()
            await conn.close()
    assert len(rows) == 1 and sim.events_read == 1
    row = rows[0]
    assert row["kind"] == "terminal_power" and row["channel_id"] == channel_id and row["meter_id"] is None
    cut = sim.events[0]
    assert cut.off is not None and cut.on is not None
    assert row["occurred_at"] == cut.off.replace(tzinfo=UTC) - timedelta(hours=8)
    assert row["ended_at"] == cut.on.replace(tzinfo=UTC) - timedelta(hours=8)
    assert reported == 1


async def test_the_daemon_reports_a_concentrator_whose_archive_disagrees(
    pg_dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with listening(meters=4, faults="absent=#2") as sim:  # meter 2 (Pn 3) missing at the concentrator
        conn = await asyncpg.connect(pg_dsn)
        await import_inventory(conn, read_inventory(inventory_toml(tmp_path / "inv.toml", url_of(sim), sim)))
        engine = make_engine(engine_config(["energy_import_kwh"]), pg_dsn, tmp_path)
        await engine.start()

        async def flagged() -> bool:
            value = engine.metrics.registry.get_sample_value(
                "headend_concentrator_archive_mismatch", {"channel": "conc-1"}
            )
            return value == 1

        try:
            await wait_until(flagged, 30, "the archive mismatch gauge")
        finally:
            await engine.stop()
            await conn.close()
    warnings = [r for r in caplog.records if "archive disagrees" in r.getMessage()]
    fields = warnings[0].__dict__ if warnings else {}
    assert fields.get("missing_pn") == [3] and fields["extra_pn"] == [] and fields["different_pn"] == []


async def test_a_relay_command_through_the_engine_is_forwarded_and_confirmed_by_read_back(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEADEND_METER_PASSWORD", DEFAULT_PASSWORD)
    async with listening(meters=3) as sim:
        conn = await asyncpg.connect(pg_dsn)
        await import_inventory(conn, read_inventory(inventory_toml(tmp_path / "inv.toml", url_of(sim), sim)))
        target = sim.pool.archive[2]
        meter_id = await conn.fetchval("SELECT id FROM meters WHERE address = $1", target.address)
        await conn.close()
        engine = make_engine(engine_config(["energy_import_kwh"]), pg_dsn, tmp_path)
        await engine.start()
        try:
            result = await engine.control(
                meter_id, lambda d: d.switch("off", operator="00000007", poll_s=0.2)
            )
        finally:
            await engine.stop()
    model = next(m for m in sim.pool.meters if m.address == target.address).model
    assert result.status == "confirmed" and result.state.open is True and model.relay.open is True
    assert result.evidence["event_record"]["operator"] == "00000007"
    assert all(not m.model.relay.open for m in sim.pool.meters if m.address != target.address)


async def test_the_daemon_sets_a_concentrator_clock_that_is_off(pg_dsn: str, tmp_path: Path) -> None:
    async with listening(meters=1) as sim:
        sim.clock.set_local(sim.clock.local() - timedelta(minutes=7))
        conn = await asyncpg.connect(pg_dsn)
        await import_inventory(conn, read_inventory(inventory_toml(tmp_path / "inv.toml", url_of(sim), sim)))
        await conn.close()
        # guards of a second (tested on their own): the check does not wait for the wall clock
        clock = {"enabled": True, "check_every": "1h", "max_drift": "30s"}
        clock |= {"boundary_guard": "1s", "midnight_guard": "1s"}
        engine = make_engine(engine_config(["energy_import_kwh"], clock=clock), pg_dsn, tmp_path)
        await engine.start()

        async def corrected() -> bool:
            return sim.counts["afn_05"] >= 1 and abs(sim.clock.offset.total_seconds()) < 5

        try:
            await wait_until(corrected, 30, "the concentrator clock set")
        finally:
            await engine.stop()
    assert sim.counts["afn_05"] == 1
