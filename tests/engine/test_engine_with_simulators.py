"""The engine against simulated DL/T 645 buses over real TCP and pty, storing into real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from headend.config import validate_config
from headend.engine.housekeeping import MeterCheck
from headend.inventory import import_inventory, read_inventory
from simulators import BusSpec, start_bus
from tests.support.cli import headend
from tests.support.engine import engine_for, import_buses, inventory_file
from tests.support.waiting import wait_until

QUANTITIES = ["energy_import_kwh", "voltage_a_v", "power_kw"]


def engine_config(quantities: list[str] = QUANTITIES) -> object:
    return validate_config(
        {
            "polling": {"interval": "1h", "inventory_reload": "1h"},
            "read_plans": {"default": {"quantities": quantities}},
            "backfill": {"enabled": False},
            "clock": {"enabled": False},
            "events": {"enabled": False},
            "metrics": {"port": 0},
            "timeouts": {"initial": "500ms", "maximum": "1s"},
            "health": {"quarantine_after": 2, "backoff": "1h"},
        },
        "test",
    )


async def test_every_reading_is_stored_once_at_its_interval_and_a_dead_meter_is_isolated(
    pg_dsn: str, tmp_path: Path
) -> None:
    tcp_bus = await start_bus(BusSpec(meters=4, seed=60, faults="offline=#3@0+3600"))
    pty_bus = await start_bus(BusSpec(meters=3, seed=61, transport="pty"))
    conn = await asyncpg.connect(pg_dsn)
    await import_buses(conn, tmp_path / "inv.toml", {"tcp": tcp_bus, "pty": pty_bus})
    engine = engine_for(engine_config(), pg_dsn, tmp_path)
    await engine.start()
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)
    stamps = [base + timedelta(hours=k) for k in range(4)]
    try:
        for ts in stamps:
            engine.run_cycle(ts)
            await engine.wait_cycles()
        engine.run_cycle(stamps[-1])  # a repeated cycle must not duplicate anything
        await engine.wait_cycles()
        await engine.writer.flush()
        rows = await conn.fetch(
            "SELECT m.address, r.ts, count(*) AS n FROM readings r JOIN meters m ON m.id = r.meter_id "
            "WHERE r.quality = 'actual' GROUP BY 1, 2"
        )
        dead = tcp_bus.meters[3].address
        healthy = {m.address for m in tcp_bus.meters[:3]} | {m.address for m in pty_bus.meters}
        per_meter: dict[str, list[datetime]] = {}
        for row in rows:
            assert row["n"] == len(QUANTITIES)  # one row per quantity: nothing duplicated
            per_meter.setdefault(row["address"], []).append(row["ts"])
        assert set(per_meter) == healthy and dead not in per_meter
        assert all(sorted(ts_list) == stamps for ts_list in per_meter.values())
        stored = await conn.fetchval(
            "SELECT value FROM readings r JOIN meters m ON m.id = r.meter_id JOIN quantities q "
            "ON q.id = r.quantity_id WHERE m.address = $1 AND q.name = 'energy_import_kwh' AND r.ts = $2",
            pty_bus.meters[0].address,
            stamps[-1],
        )
        assert 0 < stored <= pty_bus.meters[0].model.registers.import_kwh + 0.01
        cycles = await conn.fetch(
            "SELECT c.name, rc.cycle_at, rc.due, rc.succeeded FROM read_cycles rc "
            "JOIN channels c ON c.id = rc.channel_id ORDER BY rc.cycle_at"
        )
        tcp_cycles = [r for r in cycles if r["name"] == "tcp"]
        assert all(r["succeeded"] == 3 for r in tcp_cycles)
        assert all(r["due"] == r["succeeded"] for r in cycles if r["name"] == "pty")
        # healthy meters: 5 cycles x 3 quantities; the dead meter is tried (at most 2 cycles x 2 tries)
        # and then quarantined instead of costing every cycle a timeout
        healthy_requests = 3 * len(QUANTITIES) * 5
        assert healthy_requests < tcp_bus.requests[0x11] <= healthy_requests + 4
    finally:
        await engine.stop()
        await conn.close()
        await tcp_bus.stop()
        await pty_bus.stop()


async def test_meter_back_from_an_outage_is_backfilled_from_its_load_profile(
    pg_dsn: str, tmp_path: Path
) -> None:
    bus = await start_bus(BusSpec(meters=2, seed=62))
    conn = await asyncpg.connect(pg_dsn)
    inventory = inventory_file(tmp_path / "inv.toml", {"bus": bus})
    installed = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    inventory.write_text(
        inventory.read_text().replace(
            'model = "dlt645-generic"', f'model = "dlt645-generic"\ninstalled_at = "{installed}"'
        )
    )
    await import_inventory(conn, read_inventory(inventory))
    config = validate_config(
        {
            "polling": {"interval": "15m", "inventory_reload": "1h"},
            "read_plans": {"default": {"quantities": ["energy_import_kwh"]}},
            "backfill": {"enabled": True, "lookback": "2h", "retry_every": "1h"},
            "clock": {"enabled": False},
            "events": {"enabled": False},
            "metrics": {"port": 0},
            "timeouts": {"initial": "300ms", "maximum": "1s"},
            "health": {"quarantine_after": 10},
        },
        "test",
    )
    engine = engine_for(config, pg_dsn, tmp_path)
    returning = bus.meters[0]
    now = datetime.now(UTC)
    last = now.replace(minute=(now.minute // 15) * 15, second=0, microsecond=0)
    stamps = [last - timedelta(minutes=15 * k) for k in (4, 3, 2, 1)]
    try:
        returning.model.offline = True
        await engine.start()
        for ts in stamps[:3]:
            engine.run_cycle(ts)
            await engine.wait_cycles()
        returning.model.offline = False
        engine.run_cycle(stamps[3])
        await engine.wait_cycles()
        query = (
            "SELECT r.ts, r.value, r.quality FROM readings r JOIN meters m ON m.id = r.meter_id "
            "WHERE m.address = $1 AND r.ts = ANY($2::timestamptz[]) ORDER BY r.ts"
        )

        async def four_stored() -> bool:
            await engine.writer.flush()
            return len(await conn.fetch(query, returning.address, stamps)) == 4

        await wait_until(four_stored, 20, "the three backfilled intervals and the actual one")
        rows = await conn.fetch(query, returning.address, stamps)
        assert [r["ts"] for r in rows] == stamps
        assert [r["quality"] for r in rows] == ["backfilled"] * 3 + ["actual"]
        profile = {
            (p.time - timedelta(hours=8)).replace(tzinfo=UTC): p.import_kwh for p in returning.model.profile
        }
        assert [r["value"] for r in rows[:3]] == [profile[ts] for ts in stamps[:3]]
    finally:
        await engine.stop()
        await conn.close()
        await bus.stop()


async def test_daemon_corrects_a_drifting_meter_clock(pg_dsn: str, tmp_path: Path) -> None:
    bus = await start_bus(BusSpec(meters=2, seed=63, clock_offsets_s={0: 150.0}))
    conn = await asyncpg.connect(pg_dsn)
    await import_buses(conn, tmp_path / "inv.toml", {"bus": bus})
    config = validate_config(
        {
            "polling": {"interval": "2s", "inventory_reload": "1h"},
            "read_plans": {"default": {"quantities": ["energy_import_kwh"]}},
            "backfill": {"enabled": False},
            # guards of a second around boundaries and midnight (the guards themselves are tested in
            # tests/engine/test_clock_and_relay.py): the correction does not wait for the wall clock
            "clock": {
                "enabled": True,
                "check_every": "1s",
                "max_drift": "30s",
                "boundary_guard": "1s",
                "midnight_guard": "1s",
            },
            "events": {"enabled": False},
            "metrics": {"port": 0},
        },
        "test",
    )
    engine = engine_for(config, pg_dsn, tmp_path)
    drifting = bus.meters[0].model
    try:
        await engine.start()
        # a check that falls within a guard is skipped; the next one, a second later, corrects
        query = "SELECT kind FROM events WHERE category = 'comm' AND meter_id = (SELECT id FROM meters "
        query += "WHERE address = $1)"

        async def corrected() -> bool:
            kinds = [r["kind"] for r in await conn.fetch(query, drifting.address)]
            return abs(drifting.clock.error().total_seconds()) <= 5 and "clock_corrected" in kinds

        await wait_until(corrected, 60, "the drifting clock corrected and its event stored")
        assert abs(bus.meters[1].model.clock.error().total_seconds()) < 5
    finally:
        await engine.stop()
        await conn.close()
        await bus.stop()


async def test_meters_without_event_records_are_never_asked(
    pg_dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bus = await start_bus(BusSpec(meters=2, seed=64, edition=1997))
    inventory = inventory_file(tmp_path / "inv.toml", {"bus": bus})
    inventory.write_text(inventory.read_text().replace("dlt645-2007", "dlt645-1997"))
    conn = await asyncpg.connect(pg_dsn)
    await import_inventory(conn, read_inventory(inventory))
    config = validate_config(
        {
            "polling": {"interval": "2s", "inventory_reload": "1h"},
            "read_plans": {"default": {"quantities": ["energy_import_kwh"]}},
            "backfill": {"enabled": False},
            "clock": {"enabled": False},
            "events": {"enabled": True, "collect_every": "1s"},
            "metrics": {"port": 0},
        },
        "test",
    )
    engine = engine_for(config, pg_dsn, tmp_path)
    caplog.set_level("INFO", logger="headend.engine.engine")
    collections: list[str] = []
    check_all = engine.housekeeping.check_all

    def counted(what: MeterCheck) -> None:  # the engine's own timer still runs the real check
        collections.append(what)
        check_all(what)

    engine.housekeeping.check_all = counted  # type: ignore[method-assign]
    registry = engine.metrics.registry
    try:
        await engine.start()
        # three event collections (one a second from the first boundary) after the reads of a cycle
        await wait_until(
            lambda: (
                collections.count("events") >= 3
                and bool(registry.get_sample_value("headend_job_seconds_count", {"kind": "read"}))
            ),
            30,
            "three event collections after a cycle's reads",
        )
        await engine.wait_cycles()
    finally:
        await engine.stop()
        await conn.close()
        await bus.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert "event collection failed" not in messages
    assert not any(m.startswith("meter does not support events") for m in messages)
    # the driver's capabilities say 1997 meters keep no event records: no events job ever reaches the bus,
    # while the reads of the same meters do
    assert registry.get_sample_value("headend_job_seconds_count", {"kind": "events"}) is None
    assert registry.get_sample_value("headend_job_seconds_count", {"kind": "read"}) >= 2


async def test_a_bus_too_slow_for_its_interval_starves_no_meter(pg_dsn: str, tmp_path: Path) -> None:
    # 1200 baud with line timing: about four reads fit in a 2 s interval, so every cycle overruns
    bus = await start_bus(BusSpec(meters=6, seed=65, line_timing=True, baud=1200, turnaround_s=0.05))
    conn = await asyncpg.connect(pg_dsn)
    inventory = inventory_file(tmp_path / "inv.toml", {"bus": bus})
    inventory.write_text(inventory.read_text().replace(bus.url, bus.url + "?baud=1200"))
    await import_inventory(conn, read_inventory(inventory))
    config = validate_config(
        {
            "polling": {"interval": "2s", "offset": "0s", "inventory_reload": "1h"},
            "read_plans": {"default": {"quantities": ["energy_import_kwh"]}},
            "backfill": {"enabled": False},
            "clock": {"enabled": False},
            "events": {"enabled": False},
            "metrics": {"port": 0},
        },
        "test",
    )
    engine = engine_for(config, pg_dsn, tmp_path)
    overruns = read = 0
    try:
        await engine.start()

        async def overran_and_read() -> bool:
            nonlocal overruns, read
            overruns = await conn.fetchval("SELECT count(*) FROM read_cycles WHERE succeeded < due")
            read = await conn.fetchval(
                "SELECT count(DISTINCT meter_id) FROM readings WHERE quality = 'actual'"
            )
            return overruns >= 2 and read >= 6

        await wait_until(overran_and_read, 60, "two overrun cycles and every meter read")
    finally:
        await engine.stop()
        await conn.close()
        await bus.stop()
    assert overruns >= 2  # the bus really was too slow
    assert read == 6  # yet every meter was read: the unread ones go first in the next cycle


async def test_time_of_use_plan_uses_block_reads_where_the_meter_allows(pg_dsn: str, tmp_path: Path) -> None:
    tou = ["energy_import_kwh", *(f"energy_import_t{t}_kwh" for t in range(1, 5))]
    modern = await start_bus(BusSpec(meters=2, seed=64))
    older = await start_bus(BusSpec(meters=2, seed=65, block_reads=False))
    conn = await asyncpg.connect(pg_dsn)
    await import_buses(conn, tmp_path / "inv.toml", {"modern": modern, "older": older})
    engine = engine_for(engine_config(tou), pg_dsn, tmp_path)
    await engine.start()
    stamps = [datetime(2026, 6, 1, hour, tzinfo=UTC) for hour in (1, 2)]
    try:
        for ts in stamps:
            engine.run_cycle(ts)
            await engine.wait_cycles()
        await engine.writer.flush()
        rows = await conn.fetch(
            "SELECT m.address, q.name, r.value FROM readings r JOIN meters m ON m.id = r.meter_id "
            "JOIN quantities q ON q.id = r.quantity_id WHERE r.ts = $1",
            stamps[-1],
        )
        stored = {(r["address"], r["name"]): r["value"] for r in rows}
        for meter in [*modern.meters, *older.meters]:
            tariffs = meter.model.registers.import_tariffs  # they grow far less than 0.01 kWh meanwhile
            for t in range(1, 5):
                value = stored[(meter.address, f"energy_import_t{t}_kwh")]
                assert value == pytest.approx(tariffs[t], abs=0.01)
            assert (meter.address, "energy_import_kwh") in stored
        assert modern.requests[0x11] == 2 * 2  # one block read per meter per cycle
        # the older meters refuse the block once, then each tariff is read on its own
        assert older.requests[0x11] == 2 * (1 + 5) + 2 * 5
    finally:
        await engine.stop()
        await conn.close()


async def test_overall_success_is_the_last_complete_cycles_figure(pg_dsn: str, tmp_path: Path) -> None:
    """A fast bus finishes its cycle long before a slow one: the overall success gauge never shows the
    slow bus's meters, still being read, as failures (every meter answers: it only ever reads 1.0)."""
    fast = await start_bus(BusSpec(meters=2, seed=66))
    slow = await start_bus(BusSpec(meters=2, seed=67, line_timing=True, baud=1200, turnaround_s=0.2))
    conn = await asyncpg.connect(pg_dsn)
    inventory = inventory_file(tmp_path / "inv.toml", {"fast": fast, "slow": slow})
    inventory.write_text(inventory.read_text().replace(slow.url, slow.url + "?baud=1200"))
    await import_inventory(conn, read_inventory(inventory))
    config = validate_config(
        {
            "polling": {"interval": "3s", "offset": "0s", "inventory_reload": "1h"},
            "read_plans": {"default": {"quantities": ["energy_import_kwh"]}},
            "backfill": {"enabled": False},
            "clock": {"enabled": False},
            "events": {"enabled": False},
            "metrics": {"port": 0},
        },
        "test",
    )
    engine = engine_for(config, pg_dsn, tmp_path)
    registry = engine.metrics.registry
    seen: list[float] = []
    try:
        await engine.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 40
        while await conn.fetchval("SELECT count(*) FROM read_cycles WHERE finished_at IS NOT NULL") < 4:
            assert loop.time() < deadline, seen
            value = registry.get_sample_value("headend_cycle_success_ratio_overall")
            if value or seen:
                seen.append(value)
            await asyncio.sleep(0.01)
        await engine.wait_cycles()
    finally:
        await engine.stop()
        await conn.close()
        await fast.stop()
        await slow.stop()
    assert seen and set(seen) == {1.0}


async def test_quarantine_and_timeouts_are_stored_for_meters_show_and_channels_show(
    pg_dsn: str, tmp_path: Path
) -> None:
    """The engine stores each timeout and the quarantine that follows the second one as communication
    events; ``meters show`` says until when the meter is skipped and ``channels show`` counts them."""
    bus = await start_bus(BusSpec(meters=2, seed=63, faults="offline=#1@0+3600"))
    conn = await asyncpg.connect(pg_dsn)
    await import_buses(conn, tmp_path / "inv.toml", {"tcp": bus})
    engine = engine_for(engine_config(), pg_dsn, tmp_path)
    await engine.start()
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    dead, alive = bus.meters[1].address, bus.meters[0].address
    try:
        for k in range(3):  # two timeouts, then the meter is skipped (quarantined for 1 h)
            engine.run_cycle(base + timedelta(hours=k))
            await engine.wait_cycles()

        async def stored() -> bool:
            kinds = await conn.fetch("SELECT kind FROM events WHERE category = 'comm' ORDER BY id")
            return [r["kind"] for r in kinds] == ["timeout", "timeout", "quarantined"]

        await wait_until(stored, 30, "two timeouts and a quarantine stored")
    finally:
        await engine.stop()
        await conn.close()
        await bus.stop()
    shown = headend("meters", "show", f"tcp/{dead}", "--json", "--dsn", pg_dsn)
    assert shown.returncode == 0, shown.stderr
    meter = json.loads(shown.stdout)
    until = datetime.fromisoformat(meter["quarantined_until"])
    assert timedelta(minutes=55) < until - datetime.now(UTC) <= timedelta(hours=1)
    assert meter["quarantine_failures"] == 2 and meter["quarantine_error"].startswith("timeout")
    assert meter["last_contact"] is None  # a timeout is no contact
    text = " ".join(headend("meters", "show", f"tcp/{dead}", "--dsn", pg_dsn).stdout.split())
    assert f"quarantine: until {until.isoformat(timespec='seconds')} after 2 failures" in text
    healthy = headend("meters", "show", f"tcp/{alive}", "--dsn", pg_dsn).stdout
    assert "quarantine: no" in " ".join(healthy.split())
    channel = json.loads(headend("channels", "show", "tcp", "--json", "--dsn", pg_dsn).stdout)
    assert channel["timeouts_24h"] == 2
    assert sorted(e["kind"] for e in channel["errors"]) == ["quarantined", "timeout", "timeout"]


async def test_a_cycle_cut_short_by_the_stop_is_not_counted_as_failed_reads(
    pg_dsn: str, tmp_path: Path
) -> None:
    # 8 line-timed meters at 1200 baud: one cycle takes seconds, so the stop lands in the middle of it
    bus = await start_bus(BusSpec(meters=8, seed=62, line_timing=True, baud=1200))
    conn = await asyncpg.connect(pg_dsn)
    await import_buses(conn, tmp_path / "inv.toml", {"slow": bus})
    engine = engine_for(engine_config(), pg_dsn, tmp_path)
    await engine.start()
    ts = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    try:
        engine.run_cycle(ts)
        await wait_until(lambda: bus.requests[0x11] >= 2 * len(QUANTITIES), 30, "the first meters read")
        await engine.stop()  # the worker finishes its job in flight and drops the queued ones
        assert bus.requests[0x11] < 8 * len(QUANTITIES)  # it did stop in the middle
        # the readings taken are stored; the cycle is not recorded as one with failed reads
        assert await conn.fetchval("SELECT count(*) FROM read_cycles") == 0
        read = await conn.fetchval("SELECT count(DISTINCT meter_id) FROM readings WHERE ts = $1", ts)
        assert 2 <= read < 8
    finally:
        await conn.close()
        await bus.stop()
