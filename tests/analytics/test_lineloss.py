"""Line loss per transformer area end to end: simulated meters backfilled by ``headend run``, then
``headend lineloss`` computing supply − Σ customers from the stored midnight registers, checked
against the simulators' own load-profile records; an area with a meter that was never read is
incomplete and names it."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from headend.store.maintenance import ensure_partitions
from simulators.bus import BusSpec, SimBus, start_bus
from tests.support import cli
from tests.support.daemons import Daemon
from tests.support.operators import import_inventory_cli
from tests.support.ports import free_port
from tests.support.waiting import wait_until

ZONE = ZoneInfo("Asia/Shanghai")  # the [analytics] default and the simulators' UTC+8


def _inventory(bus: SimBus, installed: datetime) -> str:
    a = [m.address for m in bus.meters]
    meters = "".join(
        f'[[meters]]\nchannel = "{channel}"\nprotocol = "dlt645-2007"\naddress = "{address}"\n'
        f'model = "dlt645-generic"\nname = "{name}"\nmultiplier = {multiplier}\n'
        f'installed_at = "{installed.isoformat()}"\n'
        for channel, address, name, multiplier in [
            ("bus", a[0], "supply-1", 1),
            ("bus", a[1], "c1", 1),
            ("bus", a[2], "c2", 3),
            ("bus", a[3], "supply-2", 1),
            ("dead", "4242", "never-read", 1),
        ]
    )
    return (
        f'[[channels]]\nname = "bus"\nurl = "{bus.url}"\n'
        f'[[channels]]\nname = "dead"\nurl = "tcp://127.0.0.1:{free_port()}"\n'
        f"{meters}"
        '[[areas]]\nname = "T1"\nsupply_meter = "supply-1"\nct_ratio = 20\npt_ratio = 1.5\n'
        'members = ["c1", "c2"]\neffective = 2020-01-01\n'
        '[[areas]]\nname = "T2"\nsupply_meter = "supply-2"\nmembers = ["never-read"]\n'
        "effective = 2020-01-01\n"
    )


def _config(path: Path, dsn: str, tmp_path: Path, metrics_port: int) -> Path:
    path.write_text(
        f'[database]\ndsn = "{dsn}"\nspool_dir = "{tmp_path / "spool"}"\n'
        '[polling]\ninterval = "8h"\noffset = "1s"\ninventory_reload = "1h"\n'
        '[read_plans.default]\nquantities = ["energy_import_kwh"]\n'
        '[backfill]\nlookback = "3d"\nretry_every = "1h"\n'
        "[clock]\nenabled = false\n[events]\nenabled = false\n"
        '[timeouts]\ninitial = "1s"\nmaximum = "3s"\n'
        f'[metrics]\nport = {metrics_port}\n[logging]\nformat = "json"\n'
    )
    return path


def _lineloss(dsn: str, config: Path, *args: str) -> cli.CliResult:
    return cli.headend("lineloss", "--config", str(config), "--dsn", dsn, *args)


def _register(bus: SimBus, index: int, at: datetime) -> float:
    """The simulator's own import register at the UTC instant ``at`` (a load-profile record)."""
    local = at.astimezone(ZONE).replace(tzinfo=None)
    return next(p.import_kwh for p in bus.meters[index].model.profile if p.time == local)


@pytest.fixture
async def backfilled(pg_dsn: str, tmp_path: Path):
    bus = await start_bus(BusSpec(meters=4, seed=2401, profile_period_s=8 * 3600))
    installed = datetime.now(UTC) - timedelta(days=4)
    inventory = tmp_path / "inv.toml"
    inventory.write_text(_inventory(bus, installed))
    done = import_inventory_cli(pg_dsn, inventory)
    assert done.returncode == 0, done.stderr
    config = _config(tmp_path / "headend.toml", pg_dsn, tmp_path, free_port())
    day = datetime.now(UTC).astimezone(ZONE).date() - timedelta(days=1)
    lo = datetime.combine(day, datetime.min.time(), ZONE).astimezone(UTC)
    hi = lo + timedelta(days=1)
    daemon = await Daemon.start(config, tmp_path / "state", 0)
    conn = await asyncpg.connect(pg_dsn)

    async def both_midnights_stored() -> bool:
        stored = await conn.fetchval(
            "SELECT count(*) FROM readings r JOIN meters m ON m.id = r.meter_id"
            " WHERE m.channel_id = (SELECT id FROM channels WHERE name = 'bus')"
            " AND r.ts = ANY($1::timestamptz[]) AND r.value IS NOT NULL",
            [lo, hi],
        )
        return stored == 8

    try:
        await wait_until(both_midnights_stored, 120, "the four meters' registers at both midnights")
        yield bus, config, day, lo, hi
    finally:
        await conn.close()
        await daemon.close()
        await bus.stop()


async def test_daily_loss_from_the_backfilled_midnights(backfilled, pg_dsn: str) -> None:
    bus, config, day, lo, hi = backfilled
    shown = _lineloss(pg_dsn, config, "--date", day.isoformat(), "--format", "json")
    assert shown.returncode == 0, shown.stderr
    by_area = {row["area"]: row for row in json.loads(shown.stdout)}

    supply = (_register(bus, 0, hi) - _register(bus, 0, lo)) * 20 * 1.5
    customers = (_register(bus, 1, hi) - _register(bus, 1, lo)) + 3 * (
        _register(bus, 2, hi) - _register(bus, 2, lo)
    )
    t1 = by_area["T1"]
    assert t1["complete"] is True and t1["missing"] == []
    assert t1["supply_kwh"] == pytest.approx(supply)
    assert t1["customers_kwh"] == pytest.approx(customers)
    assert t1["loss_kwh"] == pytest.approx(supply - customers)
    assert t1["loss_pct"] == pytest.approx(100 * (supply - customers) / supply)

    t2 = by_area["T2"]  # its customer meter was never read: no figures, the meter named
    assert t2["complete"] is False and t2["missing"] == ["never-read"]
    assert t2["loss_kwh"] is None and t2["supply_kwh"] is None

    table = _lineloss(pg_dsn, config, "--date", day.isoformat())
    assert "incomplete: never-read" in table.stdout and "1 of 2 area(s) complete" in table.stdout
    rows = list(
        csv.DictReader(
            io.StringIO(
                _lineloss(pg_dsn, config, "--date", day.isoformat(), "--area", "T1", "--format", "csv").stdout
            )
        )
    )
    assert [(r["area"], r["complete"]) for r in rows] == [("T1", "yes")]
    assert float(rows[0]["loss_kwh"]) == pytest.approx(supply - customers, abs=1e-3)


async def test_refresh_is_incremental_and_follows_changed_inputs(backfilled, pg_dsn: str) -> None:
    bus, config, day, lo, hi = backfilled
    assert _lineloss(pg_dsn, config, "--date", day.isoformat()).returncode == 0
    conn = await asyncpg.connect(pg_dsn)
    try:
        first = {
            r["area_id"]: r["computed_at"]
            for r in await conn.fetch("SELECT area_id, computed_at FROM line_losses")
        }
        assert len(first) == 2
        assert _lineloss(pg_dsn, config, "--date", day.isoformat()).returncode == 0
        again = {
            r["area_id"]: r["computed_at"]
            for r in await conn.fetch("SELECT area_id, computed_at FROM line_losses")
        }
        assert again == first  # nothing changed: nothing rewritten
        # an input changes (c2's multiplier): only T1 is recomputed, with the new figure
        await conn.execute("UPDATE meters SET multiplier = 1 WHERE name = 'c2'")
        shown = json.loads(_lineloss(pg_dsn, config, "--date", day.isoformat(), "--format", "json").stdout)
        after = {
            r["area_id"]: r["computed_at"]
            for r in await conn.fetch("SELECT area_id, computed_at FROM line_losses")
        }
        t1_id = await conn.fetchval("SELECT id FROM areas WHERE name = 'T1'")
        assert [a for a in after if after[a] != first[a]] == [t1_id]
        customers = (_register(bus, 1, hi) - _register(bus, 1, lo)) + (
            _register(bus, 2, hi) - _register(bus, 2, lo)
        )
        assert next(r for r in shown if r["area"] == "T1")["customers_kwh"] == pytest.approx(customers)
    finally:
        await conn.close()


async def test_a_month_is_complete_only_when_every_day_is(backfilled, pg_dsn: str) -> None:
    _bus, config, day, _lo, _hi = backfilled
    shown = _lineloss(pg_dsn, config, "--month", day.strftime("%Y-%m"), "--area", "T1", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    (t1,) = json.loads(shown.stdout)
    # only the last few days were backfilled (3-day lookback): the rest of the month is listed
    assert t1["complete"] is False and t1["loss_kwh"] is None
    assert day.replace(day=1).isoformat() in t1["missing"] or day.day == 1
    assert day.isoformat() not in t1["missing"]


def test_bad_requests_are_one_line(pg_dsn: str, tmp_path: Path) -> None:
    config = tmp_path / "empty.toml"
    config.write_text("")
    unknown = _lineloss(pg_dsn, config, "--area", "nowhere")
    assert unknown.returncode == 1 and unknown.stderr.strip() == "error: no area named 'nowhere'"
    both = _lineloss(pg_dsn, config, "--date", "2026-11-01", "--month", "2026-11")
    assert both.returncode == 2 and "give --date or --month, not both" in both.stderr
    bad_zone = tmp_path / "zone.toml"
    bad_zone.write_text('[analytics]\ntimezone = "Mars/Olympus"\n')
    refused = _lineloss(pg_dsn, bad_zone)
    assert refused.returncode == 1 and "unknown time zone 'Mars/Olympus'" in refused.stderr
    assert "Traceback" not in unknown.stderr + both.stderr + refused.stderr


async def test_refresh_scans_no_readings_partition_whatever_the_statistics(pg_dsn: str) -> None:
    """The refresh run as in the daemon, just after the closing midnight's registers arrived (the
    planner's statistics have not seen them): every area's figures as computed here, and no readings
    partition or chunk scanned whole (migration 0084: by key in the native layout, from the chunks'
    time index in TimescaleDB)."""
    day = date(2026, 3, 10)
    lo = datetime.combine(day, datetime.min.time(), ZONE).astimezone(UTC)
    hi = lo + timedelta(days=1)
    per_area, areas = 60, 3
    factor = {m: 1.0 + m % 3 for m in range(1, areas * per_area + 1)}  # a customer's multiplier

    def register(meter: int, at: datetime) -> float:
        return round(1000.0 + meter + (0.1 + meter % 7 * 0.05) * (at - lo).total_seconds() / 3600, 3)

    owner = await asyncpg.connect(pg_dsn)
    try:
        await owner.execute("INSERT INTO quantities (name) VALUES ('energy_import_kwh')")
        await owner.execute("INSERT INTO reading_sources (name) VALUES ('test')")
        await owner.execute("INSERT INTO channels (name, kind, address) VALUES ('c', 'tcp', '127.0.0.1:1')")
        await owner.executemany(
            "INSERT INTO meters (id, name, protocol, address, model, channel_id, installed_at, multiplier)"
            " SELECT $1::int, 'm' || $1::int, 'dlt645-2007', lpad($1::int::text, 12, '0'), 'dlt645-generic',"
            " (SELECT id FROM channels), '2020-01-01', $2",
            list(factor.items()),
        )
        supplies = [a * per_area + 1 for a in range(areas)]
        await owner.executemany(
            "INSERT INTO areas (id, name, supply_meter_id, ct_ratio, pt_ratio)"
            " VALUES ($1::int, 'A' || $1::int, $2, 20, 1.5)",
            [(a + 1, s) for a, s in enumerate(supplies)],
        )
        # customers: in force that day, but in area 3 one that left the day before and one that joins after
        left, joins = supplies[2] + 1, supplies[2] + 2
        spans: dict[int, tuple[date, date | None]] = {
            m: (date(2020, 1, 1), None) for m in factor if m not in supplies
        }
        spans[left], spans[joins] = (date(2020, 1, 1), day), (day + timedelta(days=1), None)
        await owner.executemany(
            "INSERT INTO area_members (meter_id, area_id, valid_from, valid_to) VALUES ($1, $2, $3, $4)",
            [(m, (m - 1) // per_area + 1, start, end) for m, (start, end) in spans.items()],
        )
        await ensure_partitions(owner, lo - timedelta(days=1), hi + timedelta(days=1))
        stamps = [lo - timedelta(days=1) + n * timedelta(minutes=15) for n in range(1, 2 * 96)]
        # area 2: a customer's closing register only estimated (never counts: the area is incomplete)
        estimated = supplies[1] + 5
        rows = [(m, t, register(m, t), "actual") for m in factor for t in stamps]
        closing = [(m, hi, register(m, hi), "estimated" if m == estimated else "freeze") for m in factor]
        store = (
            "INSERT INTO readings (meter_id, quantity_id, ts, value, quality, source_id)"
            " SELECT m, q.id, t, v, k::reading_quality, s.id"
            " FROM unnest($1::int[], $2::timestamptz[], $3::float8[], $4::text[]) x(m, t, v, k),"
            " quantities q, reading_sources s"
        )
        await owner.execute(store, *(list(c) for c in zip(*rows, strict=True)))
        await owner.execute("ANALYZE readings")
        await owner.execute(store, *(list(c) for c in zip(*closing, strict=True)))  # after the statistics

        whole_scans = (  # this backend's scans not yet reported, so compared before and after
            "SELECT coalesce(sum(seq_scan), 0) FROM pg_stat_xact_user_tables"
            " WHERE relid = 'readings'::regclass"
            " OR relid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'readings'::regclass)"
        )
        async with owner.transaction():
            before = await owner.fetchval(whole_scans)
            written = await owner.fetchval("SELECT headend_line_loss_refresh($1, $2, $3)", day, lo, hi)
            scanned = await owner.fetchval(whole_scans) - before
        assert written == areas
        assert scanned == 0

        got = {r["area_id"]: r for r in await owner.fetch("SELECT * FROM line_losses WHERE day = $1", day)}
        for a, supply in enumerate(supplies, start=1):
            customers = [
                m
                for m, (start, end) in spans.items()
                if (m - 1) // per_area + 1 == a and start <= day and (end is None or end > day)
            ]
            assert got[a]["meters"] == len(customers) + 1
            if a == 2:
                assert list(got[a]["missing"]) == [estimated] and got[a]["loss_kwh"] is None
                continue
            supply_kwh = (register(supply, hi) - register(supply, lo)) * 20 * 1.5
            customers_kwh = sum((register(m, hi) - register(m, lo)) * factor[m] for m in customers)
            assert list(got[a]["missing"]) == []
            assert got[a]["supply_kwh"] == pytest.approx(supply_kwh, rel=1e-12)
            assert got[a]["customers_kwh"] == pytest.approx(customers_kwh, rel=1e-12)
            assert got[a]["loss_pct"] == pytest.approx(100 * (supply_kwh - customers_kwh) / supply_kwh)
    finally:
        await owner.close()
