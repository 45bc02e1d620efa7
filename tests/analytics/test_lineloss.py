"""Line loss per transformer area end to end: simulated meters backfilled by ``headend run``, then
``headend lineloss`` computing supply − Σ customers from the stored midnight registers, checked
against the simulators' own load-profile records; an area with a meter that was never read is
incomplete and names it."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

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
