"""Analytics benchmark: one day's line loss and daily report in SQL, each against the same computation
done row by row in Python in the same run, and a month's readings export (time and peak memory).

Runs on a private embedded PostgreSQL server. Builds ``--meters`` meters on ``--channels`` channels in
``--areas`` transformer areas (the first meter of each area its supply meter, CT 40), a month of
midnight freezes for every meter and, on the last day, 96 intervals plus both freezes; every 211th
meter lacks the day's closing freeze (漏抄), every 997th has it stored as given up by backfill, every
50th had three hours re-collected. Then:

- line loss: headend.analytics.lineloss.refresh (one SQL statement) vs fetching the boundary
  registers, memberships and factors and summing per area in Python;
- daily report: headend.store.daily_report.report_sections vs fetching the day's rows (a cursor over
  every reading of the day) and counting per channel / area / meter in Python;
- export: ``headend export readings`` for the month's daily registers as a separate process (time, rows/s,
  its peak resident memory), against a bare server-side cursor over the same registers (the floor).

Both computations' results are compared; a difference stops the run. ``--part rules`` (or ``all``)
also runs ``bench_rules(conn, meters, areas)`` of bench/analytics_rules.py, when that file exists, on
a second database of the same server (it seeds its own day and prints its own figures).

Usage: python bench/analytics.py [--meters 100000] [--areas 1000] [--channels 100] [--days 30]
       [--part all|lineloss|report|export|rules]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import asyncpg
from throwaway import run_on_throwaway_server

from headend.analytics.lineloss import boundaries, refresh
from headend.store.daily_report import report_sections
from headend.store.export import _DAILY_CSV
from headend.store.maintenance import ensure_partitions
from headend.store.migrate import migrate

ZONE = ZoneInfo("Asia/Shanghai")
DAY = date(2026, 11, 30)
CT = 40.0
GOOD = ("freeze", "actual", "backfilled")


def seconds(started: float) -> float:
    return time.perf_counter() - started


async def build(conn: asyncpg.Connection, args: argparse.Namespace) -> None:
    """The inventory, areas, a month of freezes and the last day's intervals (see the docstring)."""
    per = args.meters // args.areas
    first_day = DAY - timedelta(days=args.days - 1)
    lo_month, _ = boundaries(first_day, ZONE)
    lo, hi = boundaries(DAY, ZONE)
    await conn.execute(
        "INSERT INTO channels (name, kind, address) SELECT 'ch' || c, 'tcp', '127.0.0.1:' || (10000 + c)"
        " FROM generate_series(1, $1) c",
        args.channels,
    )
    await conn.execute(
        "INSERT INTO meters (name, protocol, address, model, channel_id, installed_at)"
        " SELECT 'm' || n, 'dlt645-2007', lpad(n::text, 12, '0'), 'dlt645-generic', c.id, $3"
        " FROM generate_series(1, $1) n JOIN channels c ON c.name = 'ch' || (1 + (n - 1) % $2)",
        args.meters,
        args.channels,
        lo_month - timedelta(days=1),
    )
    await conn.execute(
        "INSERT INTO areas (name, supply_meter_id, ct_ratio, pt_ratio)"
        " SELECT 'A' || lpad(k::text, 5, '0'), m.id, $3, 1 FROM generate_series(1, $1) k"
        " JOIN meters m ON m.name = 'm' || ((k - 1) * $2 + 1)",
        args.areas,
        per,
        CT,
    )
    await conn.execute(  # every membership in one statement (the check takes one lock, migration 0060)
        "INSERT INTO area_members (meter_id, area_id, valid_from)"
        " SELECT m.id, a.id, DATE '2020-01-01' FROM meters m"
        " JOIN areas a ON a.name = 'A' || lpad((1 + (substr(m.name, 2)::int - 1) / $1)::text, 5, '0')"
        " WHERE (substr(m.name, 2)::int - 1) % $1 <> 0 AND substr(m.name, 2)::int <= $1 * $2",
        per,
        args.areas,
    )
    # kWh per hour: a customer's own rate; a supply meter's, its customers' plus 5 % loss, over CT
    await conn.execute(
        "CREATE TEMP TABLE rates AS SELECT m.id AS meter_id, 0.05 + (m.id % 17) * 0.01 AS rate,"
        " 1000.0 + m.id % 5000 AS base FROM meters m"
    )
    await conn.execute(
        "UPDATE rates r SET rate = s.total * 1.05 / $1 FROM ("
        " SELECT a.supply_meter_id, sum(c.rate) AS total FROM areas a"
        " JOIN area_members am ON am.area_id = a.id JOIN rates c ON c.meter_id = am.meter_id"
        " GROUP BY a.supply_meter_id) s WHERE r.meter_id = s.supply_meter_id",
        CT,
    )
    await ensure_partitions(conn, lo_month - timedelta(days=1), hi + timedelta(days=1))
    await conn.execute("INSERT INTO quantities (name) VALUES ('energy_import_kwh') ON CONFLICT DO NOTHING")
    await conn.execute("INSERT INTO reading_sources (name) VALUES ('bench') ON CONFLICT DO NOTHING")
    insert = """
        INSERT INTO readings (meter_id, quantity_id, ts, value, quality, source_id)
        SELECT r.meter_id, (SELECT id FROM quantities WHERE name = 'energy_import_kwh'), t,
               CASE WHEN $4::reading_quality = 'missing' THEN NULL
                    ELSE r.base + r.rate * extract(epoch FROM t - $3::timestamptz) / 3600 END,
               $4::reading_quality, (SELECT id FROM reading_sources WHERE name = 'bench')
        FROM rates r CROSS JOIN unnest($1::timestamptz[]) AS t, (SELECT $2::timestamptz[] AS picked) p
        WHERE {where}
    """
    midnights = [boundaries(first_day + timedelta(days=d), ZONE)[0] for d in range(args.days)]
    await conn.execute(insert.format(where="true"), midnights, None, lo_month, "freeze")
    intervals = [lo + timedelta(minutes=15 * i) for i in range(1, 96)]
    recollected = [t for t in intervals if 2 <= (t - lo).total_seconds() / 3600 < 5]
    await conn.execute(
        insert.format(where="(r.meter_id % 50 <> 0 OR NOT t = ANY(p.picked))"),
        intervals,
        recollected,
        lo_month,
        "actual",
    )
    await conn.execute(
        insert.format(where="r.meter_id % 50 = 0 AND t = ANY(p.picked)"),
        recollected,
        recollected,
        lo_month,
        "backfilled",
    )
    await conn.execute(
        insert.format(where="r.meter_id % 211 <> 0 AND r.meter_id % 997 <> 0"), [hi], None, lo_month, "freeze"
    )
    await conn.execute(
        insert.format(where="r.meter_id % 997 = 0 AND r.meter_id % 211 <> 0"), [hi], None, lo_month, "missing"
    )
    await conn.execute(
        "INSERT INTO read_cycles (channel_id, cycle_at, due, succeeded, readings, started_at, finished_at)"
        " SELECT c.id, t, (SELECT count(*) FROM meters m WHERE m.channel_id = c.id),"
        "        (SELECT count(*) FROM meters m WHERE m.channel_id = c.id) - (c.id % 3), 0, t, t"
        " FROM channels c CROSS JOIN unnest($1::timestamptz[]) AS t",
        [lo + timedelta(minutes=15 * i) for i in range(96)],
    )
    await conn.execute("ANALYZE")


async def lineloss_python(conn: asyncpg.Connection, lo: datetime, hi: datetime) -> dict[str, float | None]:
    """Per area name, supply − Σ customers (None when a register is missing), row by row."""
    factor: dict[int, float] = {}
    area_of: dict[int, str] = {}
    supply_of: dict[str, int] = {}
    async with conn.transaction():
        async for r in conn.cursor("SELECT id, multiplier::float8 AS f FROM meters"):
            factor[r["id"]] = r["f"]
        async for r in conn.cursor("SELECT id, name, supply_meter_id, ct_ratio * pt_ratio AS f FROM areas"):
            supply_of[r["name"]] = r["supply_meter_id"]
            factor[r["supply_meter_id"]] = r["f"]
        async for r in conn.cursor(
            "SELECT am.meter_id, a.name FROM area_members am JOIN areas a ON a.id = am.area_id"
            " WHERE am.valid_from <= $1 AND (am.valid_to IS NULL OR am.valid_to > $1)",
            DAY,
        ):
            area_of[r["meter_id"]] = r["name"]
        registers: dict[tuple[int, datetime], float] = {}
        async for r in conn.cursor(
            "SELECT meter_id, ts, value, quality::text AS quality FROM readings WHERE ts = ANY($1)", [lo, hi]
        ):
            if r["quality"] in GOOD:
                registers[(r["meter_id"], r["ts"])] = r["value"]
    totals: dict[str, float] = defaultdict(float)
    broken: set[str] = set()
    members: dict[str, list[int]] = defaultdict(list)
    for meter, area in area_of.items():
        members[area].append(meter)
    out: dict[str, float | None] = {}
    for area, supply in supply_of.items():
        for meter, sign in [(supply, 1.0), *((m, -1.0) for m in members[area])]:
            v0, v1 = registers.get((meter, lo)), registers.get((meter, hi))
            if v0 is None or v1 is None:
                broken.add(area)
            else:
                totals[area] += sign * (v1 - v0) * factor[meter]
        out[area] = None if area in broken else totals[area]
    return out


async def report_python(conn: asyncpg.Connection, lo: datetime, hi: datetime) -> dict[str, object]:
    """The report's channel, missed and backfill figures, row by row over the day's readings."""
    channel_of: dict[int, str] = {}
    async with conn.transaction():
        async for r in conn.cursor(
            "SELECT m.id, c.name FROM meters m JOIN channels c ON c.id = m.channel_id"
            " WHERE m.enabled AND m.installed_at < $1 AND (m.removed_at IS NULL OR m.removed_at >= $1)",
            hi,
        ):
            channel_of[r["id"]] = r["name"]
        cycles: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        async for r in conn.cursor(
            "SELECT c.name, x.due, x.succeeded FROM read_cycles x JOIN channels c ON c.id = x.channel_id"
            " WHERE x.cycle_at >= $1 AND x.cycle_at < $2 AND x.finished_at IS NOT NULL",
            lo,
            hi,
        ):
            row = cycles[r["name"]]
            row[0], row[1], row[2] = row[0] + 1, row[1] + r["due"], row[2] + r["succeeded"]
        frozen: set[int] = set()
        closing: dict[int, str] = {}
        last_read: dict[int, datetime] = {}
        recovered: Counter[str] = Counter()
        given_up: Counter[str] = Counter()
        touched: dict[str, set[int]] = defaultdict(set)
        async for r in conn.cursor(
            "SELECT meter_id, ts, quality::text AS quality FROM readings WHERE ts >= $1 AND ts <= $2",
            lo,
            hi,
            prefetch=5000,
        ):
            meter, ts, quality = r["meter_id"], r["ts"], r["quality"]
            if ts == hi:
                closing[meter] = quality
                if quality in GOOD:
                    frozen.add(meter)
            if quality in GOOD and ts > last_read.get(meter, lo - timedelta(days=1)):
                last_read[meter] = ts
            if ts > lo and quality in ("backfilled", "freeze", "missing") and meter in channel_of:
                channel = channel_of[meter]
                touched[channel].add(meter)
                if quality == "missing":
                    given_up[channel] += 1
                else:
                    recovered[channel] += 1
    per_channel = Counter(channel_of.values())
    frozen_per_channel = Counter(channel_of[m] for m in frozen if m in channel_of)
    missed = sorted(m for m in channel_of if m not in frozen)
    reasons = Counter(
        "backfill gave up"
        if closing.get(m) == "missing"
        else "no answer all day"
        if m not in last_read
        else "other"
        for m in missed
    )
    return {
        "channels": {c: (per_channel[c], frozen_per_channel[c], *cycles[c]) for c in per_channel},
        "missed": len(missed),
        "reasons": dict(reasons),
        "backfill": {c: (len(touched[c]), recovered[c], given_up[c]) for c in touched},
    }


def rules_hook() -> object | None:
    """``bench_rules`` of bench/analytics_rules.py, when that file exists."""
    path = Path(__file__).with_name("analytics_rules.py")
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("analytics_rules", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, "bench_rules", None)


async def bench_rules_hook(conn: asyncpg.Connection, dsn: str, args: argparse.Namespace) -> None:
    """The rules pass of bench/analytics_rules.py on a fresh database of this server."""
    hook = rules_hook()
    if hook is None:
        print("rules: bench/analytics_rules.py not present, skipped")
        return
    await conn.execute("CREATE DATABASE analytics_rules")
    rules_dsn = urlunsplit(urlsplit(dsn)._replace(path="/analytics_rules"))
    await migrate(rules_dsn)
    rules_conn = await asyncpg.connect(rules_dsn)
    try:
        await hook(rules_conn, args.meters, args.areas)  # type: ignore[operator]
    finally:
        await rules_conn.close()


async def bench_lineloss(conn: asyncpg.Connection, lo: datetime, hi: datetime) -> float:
    started = time.perf_counter()
    await refresh(conn, [DAY], ZONE)
    in_sql = seconds(started)
    started = time.perf_counter()
    by_python = await lineloss_python(conn, lo, hi)
    in_python = seconds(started)
    stored = {
        r["name"]: r["loss_kwh"]
        for r in await conn.fetch(
            "SELECT a.name, l.loss_kwh FROM line_losses l JOIN areas a ON a.id = l.area_id WHERE l.day = $1",
            DAY,
        )
    }
    for area, loss in by_python.items():
        other = stored[area]
        if (loss is None) != (other is None) or (
            loss is not None and other is not None and abs(loss - other) > 1e-6
        ):
            raise SystemExit(f"line loss of {area} differs: SQL {other}, Python {loss}")
    incomplete = sum(1 for v in by_python.values() if v is None)
    print(
        f"{'line loss, SQL (refresh of the day)':44s} {in_sql:8.2f} s   {in_python / in_sql:5.1f}x faster"
        f" than row by row ({in_python:.2f} s); {len(stored)} areas, {incomplete} incomplete"
    )
    return in_sql


async def bench_report(conn: asyncpg.Connection, lo: datetime, hi: datetime) -> float:
    await refresh(conn, [DAY], ZONE)
    started = time.perf_counter()
    sections = await report_sections(conn, DAY, lo, hi)
    in_sql = seconds(started)
    started = time.perf_counter()
    by_python = await report_python(conn, lo, hi)
    in_python = seconds(started)
    channels = {
        r["channel"]: (r["meters"], r["frozen"], r["cycles"], r["due"], r["succeeded"])
        for r in sections["channels"]
    }
    backfill = {r["channel"]: (r["meters"], r["recovered"], r["given_up"]) for r in sections["backfill"]}
    if channels != by_python["channels"] or backfill != by_python["backfill"]:
        raise SystemExit("the daily report's channel or backfill figures differ between SQL and Python")
    if len(sections["missed"]) != by_python["missed"]:
        raise SystemExit(f"missed meters: SQL {len(sections['missed'])}, Python {by_python['missed']}")
    print(
        f"{'daily report, SQL (5 sections)':44s} {in_sql:8.2f} s   {in_python / in_sql:5.1f}x faster than"
        f" row by row ({in_python:.2f} s); {len(sections['missed'])} missed {by_python['reasons']}"
    )
    return in_sql


# Runs a command and prints its peak resident memory (kB) last on stderr: the export is started from
# this small process, because a process forked from the benchmark counts the benchmark's own memory
# (copied by the fork, held until it runs the export) in its peak.
_PEAK = (
    "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]);"
    " print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr);"
    " sys.exit(done.returncode)"
)


async def bench_export(conn: asyncpg.Connection, dsn: str, args: argparse.Namespace, work: Path) -> None:
    first = DAY - timedelta(days=args.days - 1)
    midnights = [boundaries(first + timedelta(days=d), ZONE)[0] for d in range(args.days + 1)]
    started = time.perf_counter()
    rows = 0
    async with conn.transaction():
        async for _ in conn.cursor(
            "SELECT meter_id, ts, value FROM readings WHERE ts = ANY($1)", midnights, prefetch=2000
        ):
            rows += 1
    floor = seconds(started)
    if args.explain:  # where the export's time goes: the plan of its COPY query, run
        quantity = await conn.fetchval("SELECT id FROM quantities WHERE name = 'energy_import_kwh'")
        async with conn.transaction(readonly=True):
            await conn.execute("SET LOCAL jit = off")
            await conn.execute("SET LOCAL work_mem = '64MB'")
            plan = await conn.fetch(
                f"EXPLAIN (ANALYZE, BUFFERS) {_DAILY_CSV}", first, DAY, str(ZONE), None, None, quantity
            )
        print("\n".join(r[0] for r in plan))
    config = work / "bench.toml"
    config.write_text("")
    out = work / "export.csv"
    command = [
        sys.executable, "-m", "headend.cli", "export", "readings", "--from", first.isoformat(),
        "--to", (DAY + timedelta(days=1)).isoformat(), "--config", str(config), "--dsn", dsn, "-o", str(out),
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PEAK, *command], capture_output=True, text=True)
    took = seconds(started)
    if done.returncode:
        raise SystemExit(f"export failed: {done.stderr.strip().splitlines()[-2:-1]}")
    *_, summary, peak_kb = done.stderr.strip().splitlines()
    peak_mb = int(peak_kb) / 1024
    exported = int(summary.split()[1])
    size_mb = out.stat().st_size / 1e6
    print(
        f"{'export, daily registers (headend CLI)':44s} {took:8.2f} s   {exported / took:,.0f} rows/s,"
        f" {took / floor:4.1f}x the floor's time ({floor:.2f} s for {rows:,} bare registers);"
        f" {exported:,} rows, {size_mb:.0f} MB, peak RSS {peak_mb:.0f} MB"
    )


async def run(args: argparse.Namespace, dsn: str, spool: Path) -> None:
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    started = time.perf_counter()
    await build(conn, args)
    stored = await conn.fetchval("SELECT count(*) FROM readings")
    mode = await conn.fetchval("SELECT value FROM headend_settings WHERE key = 'storage_mode'")
    print(
        f"storage mode {mode}; {args.meters:,} meters, {args.areas:,} areas, {args.channels} channels;"
        f" {stored:,} readings ({args.days} days of freezes, 96 intervals on {DAY});"
        f" built in {seconds(started):.0f} s"
    )
    lo, hi = boundaries(DAY, ZONE)
    analytics = 0.0
    if args.part in ("all", "lineloss"):
        analytics += await bench_lineloss(conn, lo, hi)
    if args.part in ("all", "report"):
        analytics += await bench_report(conn, lo, hi)
    if args.part in ("all", "rules"):
        await bench_rules_hook(conn, dsn, args)
    if args.part == "all":
        print(f"{'the day in SQL (line loss + report)':44s} {analytics:8.2f} s")
    if args.part in ("all", "export"):
        spool.mkdir(parents=True, exist_ok=True)
        await bench_export(conn, dsn, args, spool)
    await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--meters", type=int, default=100_000)
    parser.add_argument("--areas", type=int, default=1_000)
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--explain", action="store_true", help="print the export query's plan, run")
    parser.add_argument("--part", choices=("all", "lineloss", "report", "export", "rules"), default="all")
    args = parser.parse_args()
    run_on_throwaway_server(run, args)


if __name__ == "__main__":
    main()
