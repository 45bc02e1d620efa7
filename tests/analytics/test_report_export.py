"""``headend report daily`` and ``headend export readings`` end to end: simulated meters backfilled by
``headend run`` (the line-loss fixture: areas T1 and T2, a meter on a dead channel), then the report's
sections and the export's rows checked against the simulators' own registers; repeats give the same
bytes, a seeded suspect register is flagged, and a year of intervals streams in flat memory."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from headend.store.maintenance import ensure_partitions
from tests.analytics.test_lineloss import ZONE, _register, backfilled  # noqa: F401
from tests.support import cli


def _headend(dsn: str, config: Path, *args: str) -> cli.CliResult:
    return cli.headend(*args, "--config", str(config), "--dsn", dsn, timeout=120)


async def test_daily_report_sections(backfilled, pg_dsn: str, logins: dict[str, str]) -> None:  # noqa: F811
    bus, config, day, lo, hi = backfilled
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            "INSERT INTO fee_control_refusals (meter_id, action, rule, since)"
            " SELECT id, 'disconnect', 'protected', $1 FROM meters WHERE name = 'c1'",
            lo + timedelta(hours=9),
        )
        # one tamper exception opened that day and still open, one opened the day before and closed
        # automatically in it (opened, then closed, as the daemon does)
        await conn.execute(
            "INSERT INTO exceptions (rule, meter_id, first_seen, last_seen)"
            " SELECT 'tamper', id, $1, $1 FROM meters WHERE name = 'c2'",
            lo + timedelta(hours=3),
        )
        await conn.execute(
            "INSERT INTO exceptions (rule, meter_id, first_seen, last_seen)"
            " SELECT 'no_read', id, $1, $1 FROM meters WHERE name = 'c1'",
            lo - timedelta(hours=5),
        )
        await conn.execute(
            "UPDATE exceptions SET state = 'auto_closed', clear_since = $1, closed_at = $2"
            " WHERE rule = 'no_read'",
            lo + timedelta(hours=1),
            lo + timedelta(hours=2),
        )
        shown = _headend(pg_dsn, config, "report", "daily", "--date", day.isoformat(), "--format", "json")
        assert shown.returncode == 0, shown.stderr
        report = json.loads(shown.stdout)
        assert report["date"] == day.isoformat() and report["timezone"] == "Asia/Shanghai"
        channels = {r["channel"]: r for r in report["channels"]}
        assert (channels["bus"]["meters"], channels["bus"]["frozen"], channels["bus"]["freeze_pct"]) == (
            4,
            4,
            100,
        )
        assert (channels["dead"]["meters"], channels["dead"]["frozen"], channels["dead"]["freeze_pct"]) == (
            1,
            0,
            0,
        )
        cycles = await conn.fetch(
            "SELECT c.name, count(*) AS n, sum(due) AS due, sum(succeeded) AS ok FROM read_cycles r"
            " JOIN channels c ON c.id = r.channel_id WHERE cycle_at >= $1 AND cycle_at < $2"
            " AND finished_at IS NOT NULL GROUP BY c.name",
            lo,
            hi,
        )
        for row in cycles:
            assert (channels[row["name"]]["cycles"], channels[row["name"]]["due"]) == (row["n"], row["due"])
            assert channels[row["name"]]["succeeded"] == row["ok"]

        # 漏抄: only the meter on the dead channel, never read, in area T2
        assert report["missed"] == [
            {
                "meter": "never-read",
                "channel": "dead",
                "area": "T2",
                "reason": "never read",
                "last_read": None,
            }
        ]
        areas = {r["area"]: r for r in report["areas"]}
        supply = (_register(bus, 0, hi) - _register(bus, 0, lo)) * 20 * 1.5
        customers = (_register(bus, 1, hi) - _register(bus, 1, lo)) + 3 * (
            _register(bus, 2, hi) - _register(bus, 2, lo)
        )
        assert (areas["T1"]["meters"], areas["T1"]["frozen"]) == (3, 3)
        assert areas["T1"]["loss_kwh"] == pytest.approx(supply - customers)
        assert areas["T1"]["loss_status"] in ("ok", "over limit", "negative")
        assert (areas["T2"]["meters"], areas["T2"]["frozen"], areas["T2"]["loss_status"]) == (
            2,
            1,
            "incomplete",
        )

        # 补抄: every bus interval of the day came from the meters' records, none was given up
        stored = await conn.fetchval(
            "SELECT count(*) FROM readings r JOIN meters m ON m.id = r.meter_id"
            " WHERE m.channel_id = (SELECT id FROM channels WHERE name = 'bus') AND r.ts > $1 AND r.ts <= $2",
            lo,
            hi,
        )
        assert report["backfill"] == [{"channel": "bus", "meters": 4, "recovered": stored, "given_up": 0}]
        assert report["exceptions"] == [
            {"rule": "no_read", "opened": 0, "resolved": 0, "auto_closed": 1, "active_at_end": 0},
            {"rule": "tamper", "opened": 1, "resolved": 0, "auto_closed": 0, "active_at_end": 1},
        ]
        assert report["fee_control"] == [
            {
                "what": "refused",
                "action": "disconnect",
                "reason": "protected",
                "outcome": "refused",
                "count": 1,
            }
        ]

        # the reporting login sees the same report
        as_reporting = _headend(
            logins["reporting"], config, "report", "daily", "--date", day.isoformat(), "--format", "json"
        )
        assert as_reporting.returncode == 0, as_reporting.stderr
        assert json.loads(as_reporting.stdout) == report
        table = _headend(pg_dsn, config, "report", "daily", "--date", day.isoformat())
        assert table.returncode == 0, table.stderr
        assert "Meters without the day's freeze" in table.stdout and "never-read" in table.stdout
        as_csv = _headend(pg_dsn, config, "report", "daily", "--date", day.isoformat(), "--format", "csv")
        blocks = as_csv.stdout.split("\n\n")
        assert [b.splitlines()[0] for b in blocks] == [
            "# channels",
            "# areas",
            "# missed",
            "# backfill",
            "# exceptions",
            "# fee_control",
        ]
        missed = list(csv.DictReader(io.StringIO(blocks[2].split("\n", 1)[1])))
        assert [(r["meter"], r["reason"]) for r in missed] == [("never-read", "never read")]
    finally:
        await conn.close()


async def test_export_applies_multipliers_and_repeats_byte_for_byte(
    backfilled,  # noqa: F811
    pg_dsn: str,
    logins: dict[str, str],
) -> None:
    bus, config, day, lo, hi = backfilled
    args = ("export", "readings", "--from", day.isoformat(), "--to", (day + timedelta(days=1)).isoformat())
    first = _headend(pg_dsn, config, *args)
    assert first.returncode == 0, first.stderr
    rows = {r["meter"]: r for r in csv.DictReader(io.StringIO(first.stdout))}
    assert sorted(rows) == ["c1", "c2", "never-read", "supply-1", "supply-2"]
    # the supply meter carries its area's CT × PT, a customer its own multiplier
    assert float(rows["supply-1"]["multiplier"]) == 30
    assert float(rows["supply-1"]["register_kwh"]) == pytest.approx(_register(bus, 0, lo) * 30, abs=1e-6)
    assert float(rows["c2"]["register_kwh"]) == pytest.approx(_register(bus, 2, lo) * 3, abs=1e-6)
    assert float(rows["c2"]["consumption_kwh"]) == pytest.approx(
        (_register(bus, 2, hi) - _register(bus, 2, lo)) * 3, abs=1e-6
    )
    assert rows["c1"]["consumption_quality"] == "valid"
    assert (rows["never-read"]["register_kwh"], rows["never-read"]["register_quality"]) == ("", "missing")
    assert rows["never-read"]["consumption_quality"] == "missing"
    assert first.stderr.splitlines()[-2:] == ["export: 100% (5 rows)", "exported 5 rows"]

    again = _headend(pg_dsn, config, *args)
    assert again.stdout == first.stdout
    # the reporting login (read only) gets the same bytes
    assert _headend(logins["reporting"], config, *args).stdout == first.stdout
    as_json = _headend(pg_dsn, config, *args, "--format", "json")
    assert _headend(pg_dsn, config, *args, "--format", "json").stdout == as_json.stdout
    # the JSON rows (written row by row) say what the CSV rows (formatted by the server) say
    for item in json.loads(as_json.stdout):
        line = rows[item["meter"]]
        assert (item["day"], item["register_quality"], item["consumption_quality"]) == (
            line["day"],
            line["register_quality"],
            line["consumption_quality"],
        )
        for column in ("multiplier", "register_kwh", "consumption_kwh"):
            assert item[column] == (float(line[column]) if line[column] else None), column

    # a suspect register is flagged, and so is the consumption that uses it
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            "UPDATE readings SET quality = 'suspect' WHERE ts = $1"
            " AND meter_id = (SELECT id FROM meters WHERE name = 'c1')",
            hi,
        )
        kept = await conn.fetchval(
            "SELECT quality::text FROM readings WHERE ts = $1"
            " AND meter_id = (SELECT id FROM meters WHERE name = 'c1')"
            " AND quantity_id = (SELECT id FROM quantities WHERE name = 'energy_import_kwh')",
            lo,
        )
    finally:
        await conn.close()
    flagged = _headend(pg_dsn, config, *args, "--meter", "c1", "--meter", "c2")
    by_meter = {r["meter"]: r for r in csv.DictReader(io.StringIO(flagged.stdout))}
    assert sorted(by_meter) == ["c1", "c2"]
    assert (by_meter["c1"]["register_quality"], by_meter["c1"]["consumption_quality"]) == (kept, "suspect")
    assert by_meter["c2"]["consumption_quality"] == "valid"
    flagged_json = _headend(pg_dsn, config, *args, "--meter", "c1", "--format", "json")
    assert [r["consumption_quality"] for r in json.loads(flagged_json.stdout)] == ["suspect"]


def _peak_rss_kb(dsn: str, config: Path, *args: str) -> tuple[int, str]:
    """Run the export in a fresh interpreter; its peak resident memory (kB) and its stderr."""
    done, peak_kb = cli.headend_peak_rss(
        *args, "--config", str(config), "--dsn", dsn, "-o", "/dev/null", timeout=300
    )
    assert done.returncode == 0, done.stderr
    return peak_kb, done.stderr


async def test_a_year_of_intervals_streams_in_flat_memory(pg_dsn: str, tmp_path: Path) -> None:
    config = tmp_path / "headend.toml"
    config.write_text("")
    conn = await asyncpg.connect(pg_dsn)
    start = datetime(2025, 1, 1, tzinfo=ZONE)
    try:
        channel = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('export-bus', 'tcp', '127.0.0.1:1')"
            " RETURNING id"
        )
        await conn.execute(
            "INSERT INTO meters (name, protocol, address, model, channel_id, installed_at)"
            " SELECT 'x' || n, 'dlt645-2007', lpad(n::text, 12, '0'), 'dlt645-generic', $1, $2"
            " FROM generate_series(1, 5) AS n",
            channel,
            start - timedelta(days=1),
        )
        await ensure_partitions(conn, start.astimezone(UTC), (start + timedelta(days=366)).astimezone(UTC))
        await conn.execute(
            "INSERT INTO quantities (name) VALUES ('energy_import_kwh') ON CONFLICT DO NOTHING"
        )
        await conn.execute("INSERT INTO reading_sources (name) VALUES ('test') ON CONFLICT DO NOTHING")
        await conn.execute(
            "INSERT INTO readings (meter_id, quantity_id, ts, value, source_id)"
            " SELECT m.id, (SELECT id FROM quantities WHERE name = 'energy_import_kwh'), t,"
            "        extract(epoch FROM t - $1) / 3600, (SELECT id FROM reading_sources WHERE name = 'test')"
            " FROM meters m, generate_series($1, $2, interval '15 minutes') AS t WHERE m.name LIKE 'x%'",
            start,
            start + timedelta(days=365) - timedelta(minutes=15),
        )
    finally:
        await conn.close()
    meters = [a for n in range(1, 6) for a in ("--meter", f"x{n}")]
    small, _ = _peak_rss_kb(
        pg_dsn,
        config,
        "export",
        "readings",
        "--intervals",
        "--from",
        "2025-01-01",
        "--to",
        "2025-01-08",
        *meters,
    )
    large, progress = _peak_rss_kb(
        pg_dsn,
        config,
        "export",
        "readings",
        "--intervals",
        "--from",
        "2025-01-01",
        "--to",
        "2026-01-01",
        *meters,
    )
    rows = 5 * 365 * 96
    lines = progress.splitlines()
    assert lines[-1] == f"exported {rows} rows"
    assert [line.split(" (")[0] for line in lines if line.startswith("export:")] == [
        f"export: {n}%" for n in range(20, 101, 20)
    ]
    assert lines[-2] == f"export: 100% ({rows} rows)"
    # 175,200 rows (~20 MB of records if held at once): the peak grows by well under that
    assert large - small < 12_000, (small, large)


def test_bad_requests_are_one_line(pg_dsn: str, tmp_path: Path) -> None:
    config = tmp_path / "empty.toml"
    config.write_text("")
    export = ("export", "readings", "--from", "2026-11-02", "--to")
    backwards = _headend(pg_dsn, config, *export, "2026-11-01")
    assert (
        backwards.returncode == 2
        and backwards.stderr.strip() == "error: --to 2026-11-01 is not after --from 2026-11-02"
    )
    nowhere = _headend(pg_dsn, config, *export, "2026-11-03", "--area", "nowhere")
    assert nowhere.returncode == 1 and nowhere.stderr.strip() == "error: no area named 'nowhere'"
    nobody = _headend(pg_dsn, config, *export, "2026-11-03", "--meter", "no-such-meter")
    assert nobody.returncode == 1 and nobody.stderr.strip() == "error: no meter matches no-such-meter"
    bad_date = _headend(pg_dsn, config, "report", "daily", "--date", "2026-13-01")
    assert bad_date.returncode == 2 and "--date" in bad_date.stderr
    for done in (backwards, nowhere, nobody, bad_date):
        assert "Traceback" not in done.stderr and done.stdout == ""
