"""Exception rules benchmark: one rules pass in SQL over a day of 96 intervals against the same
computation done row by row in Python, in the same run, with the findings compared.

``bench_rules(conn, meters, areas)`` seeds a migrated database holding no meters yet (one connection,
schema owner; meter ids 1..meters, area ids 1..areas, the day 2026-06-01 in Asia/Shanghai): the
meters in ``areas`` transformer areas, import and export registers at the 97 quarter-hour instants
of the day (both midnights included, so the areas' line losses compute), the phase voltages and
currents of the day's last interval, and a few meters in each condition (stopped, reversed wiring,
backwards, lost phase, imbalance, spike). It prints the seeding time, the SQL pass of the six reading
rules, the row-by-row baseline of the same six rules and their ratio, and the full pass (all twelve
rules, the line-loss refresh of the day included). The timed pass runs 40 s after the day's last
instant, as the daemon runs one just after a cycle (its window starts between two readings of an hour,
read whole or reading by reading as the boundary splits it or not); the same pass at the cycle's own
instant (every boundary on the hour) is timed too. Do not run it at full size
on a shared machine.

Usage: python bench/analytics_rules.py [--meters 2000] [--areas 20]
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
from throwaway import run_on_throwaway_server

from headend.analytics.exceptions import run_rules
from headend.config import ExceptionsConfig
from headend.store.exception_rules import WINDOW_SUMMARY_FROM_READINGS
from headend.store.exceptions import drop_window_summary, summarise_window
from headend.store.maintenance import ensure_partitions
from headend.store.migrate import migrate
from headend.store.reading_hours import fold, hour_start

ZONE = ZoneInfo("Asia/Shanghai")
DAY_START = datetime(2026, 6, 1, tzinfo=ZONE).astimezone(UTC)
NOW = DAY_START + timedelta(days=1)
# The daemon runs a pass just after a cycle is stored, not on the cycle's instant: the timed pass runs
# this long after the day's last instant (its window holds the same readings as the baseline's).
PASS_DELAY = timedelta(seconds=40)
READING_RULES = [
    "register_backwards",
    "meter_stopped",
    "reverse_energy",
    "voltage_loss",
    "current_imbalance",
    "consumption_spike",
]
CFG = ExceptionsConfig(
    enabled=True, rules=READING_RULES, window=86400, spike_window=3600, spike_history=86400, spike_min_kwh=0.5
)
READING_COLUMNS = ["meter_id", "quantity_id", "ts", "value", "quality", "source_id"]
CONDITIONS = ("stopped", "reversed", "backwards", "lost_phase", "imbalance", "spike")
SEED_BATCH = 5000  # meters generated and copied at a time


def _condition(meter: int) -> str:
    """Every 97th meter is in a condition, the conditions in turn."""
    return CONDITIONS[(meter // 97) % len(CONDITIONS)] if meter % 97 == 0 else ""


def _rows(first: int, last: int, qids: dict[str, int], source: int) -> list[tuple[object, ...]]:
    """The day's readings of meters ``first..last``."""
    rows: list[tuple[object, ...]] = []
    for m in range(first, last + 1):
        condition = _condition(m)
        rate = 0.2 + (m % 7) * 0.1  # kWh per interval
        imported = exported = 1000.0 + m % 500
        for i in range(97):
            ts = DAY_START + timedelta(minutes=15 * i)
            step = (
                0.0
                if condition in ("stopped", "reversed")
                else rate * (20 if condition == "spike" and i > 93 else 1)
            )
            imported += step
            exported += rate if condition == "reversed" else 0.0
            value = imported - (50 if condition == "backwards" and i == 60 else 0)
            rows.append((m, qids["energy_import_kwh"], ts, round(value, 2), "actual", source))
            rows.append((m, qids["energy_export_kwh"], ts, round(exported, 2), "actual", source))
        for p in "abc":
            volts = 0.4 if condition == "lost_phase" and p == "b" else 230.0
            amps = 0.0 if volts < 1 else 5.0 * (1.8 if condition == "imbalance" and p == "a" else 1)
            rows.append((m, qids[f"voltage_{p}_v"], NOW, volts, "actual", source))
            rows.append((m, qids[f"current_{p}_a"], NOW, amps, "actual", source))
    return rows


async def _seed(conn: asyncpg.Connection, meters: int, areas: int) -> list[tuple[object, ...]]:
    """Store the day but its last instant; return the last instant's readings (the last cycle)."""
    names = [
        "energy_import_kwh",
        "energy_export_kwh",
        *(f"{k}_{p}_{u}" for k, u in (("voltage", "v"), ("current", "a")) for p in "abc"),
    ]
    await conn.executemany(
        "INSERT INTO quantities (name) VALUES ($1) ON CONFLICT DO NOTHING", [(n,) for n in names]
    )
    qids = {r["name"]: r["id"] for r in await conn.fetch("SELECT id, name FROM quantities")}
    source = await conn.fetchval(
        "INSERT INTO reading_sources (name) VALUES ('bench')"
        " ON CONFLICT (name) DO UPDATE SET name = 'bench' RETURNING id"
    )
    channel = await conn.fetchval(
        "INSERT INTO channels (name, kind, address) VALUES ('bench', 'tcp', '127.0.0.1:1') RETURNING id"
    )
    await conn.execute(
        "INSERT INTO meters (id, name, protocol, address, model, channel_id, installed_at)"
        " SELECT g, 'm' || g, 'dlt645-2007', lpad(g::text, 12, '0'), 'dlt645-generic', $2, '2020-01-01'"
        " FROM generate_series(1, $1) g",
        meters,
        channel,
    )
    per_area = meters // areas
    await conn.execute(
        "INSERT INTO areas (id, name, supply_meter_id) SELECT a, 'A' || a, (a - 1) * $2 + 1"
        " FROM generate_series(1, $1) a",
        areas,
        per_area,
    )
    await conn.execute(
        "INSERT INTO area_members (meter_id, area_id, valid_from)"
        " SELECT g, (g - 1) / $2 + 1, '2020-01-01' FROM generate_series(1, $1) g"
        " WHERE (g - 1) % $2 <> 0 AND (g - 1) / $2 < $3",
        meters,
        per_area,
        areas,
    )
    await ensure_partitions(conn, DAY_START, NOW)
    last_cycle: list[tuple[object, ...]] = []
    for first in range(1, meters + 1, SEED_BATCH):  # a batch of meters at a time: memory stays flat
        rows = _rows(first, min(meters, first + SEED_BATCH - 1), qids, source)
        await conn.copy_records_to_table(
            "readings", records=[r for r in rows if r[2] < NOW], columns=READING_COLUMNS
        )
        last_cycle += [r for r in rows if r[2] >= NOW]
    await conn.execute("ANALYZE readings")
    return last_cycle


async def _row_by_row(conn: asyncpg.Connection) -> dict[str, set[int]]:
    """The six reading rules, each reading fetched and judged in Python, a meter at a time as its
    readings arrive (in meter order: memory holds one meter's day)."""
    found: dict[str, set[int]] = {rule: set() for rule in READING_RULES}
    meter: int | None = None
    series: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    async with conn.transaction():
        async for r in conn.cursor(
            "SELECT r.meter_id, q.name, r.ts, r.value"
            " FROM readings r JOIN quantities q ON q.id = r.quantity_id"
            " WHERE r.ts > $1 AND r.ts <= $2 AND r.quality IN ('actual', 'backfilled', 'freeze')"
            " ORDER BY r.meter_id, q.name, r.ts",
            NOW - timedelta(seconds=CFG.window),
            NOW,
            prefetch=50_000,
        ):
            if r["meter_id"] != meter:
                if meter is not None:
                    _judge(meter, series, found)
                meter, series = r["meter_id"], defaultdict(list)
            series[r["name"]].append((r["ts"], r["value"]))
    if meter is not None:
        _judge(meter, series, found)
    return found


def _change(points: list[tuple[datetime, float]]) -> float:
    return max(v for _, v in points) - min(v for _, v in points)


def _span(points: list[tuple[datetime, float]]) -> float:
    return (points[-1][0] - points[0][0]).total_seconds()


def _judge(m: int, series: dict[str, list[tuple[datetime, float]]], found: dict[str, set[int]]) -> None:
    """The six rules on one meter's readings of the window, by quantity name."""
    cfg, half = CFG, CFG.window / 2
    imp, exp = series.get("energy_import_kwh", []), series.get("energy_export_kwh", [])
    if any(b < a - cfg.register_tolerance_kwh for (_, a), (_, b) in itertools.pairwise(imp)):
        found["register_backwards"].add(m)
    currents = [v for p in "abc" for _, v in series.get(f"current_{p}_a", [])]
    flat_import = bool(imp) and _span(imp) >= half and _change(imp) <= cfg.flat_kwh
    flowing = bool(currents) and sum(currents) / len(currents) >= cfg.min_current_a
    if flat_import and flowing and (not exp or _change(exp) <= cfg.flat_kwh):
        found["meter_stopped"].add(m)
    if flat_import and exp and _change(exp) >= cfg.reverse_min_kwh:
        found["reverse_energy"].add(m)
    volts = [series[f"voltage_{p}_v"][-1][1] for p in "abc" if f"voltage_{p}_v" in series]
    if volts and min(volts) < cfg.voltage_loss_v:
        found["voltage_loss"].add(m)
    amps = [series[f"current_{p}_a"][-1][1] for p in "abc" if f"current_{p}_a" in series]
    if (
        len(amps) == 3
        and max(amps) >= cfg.imbalance_min_a
        and 100 * (max(amps) - min(amps)) / max(amps) > cfg.imbalance_pct
    ):
        found["current_imbalance"].add(m)
    cut = NOW - timedelta(seconds=cfg.spike_window)
    recent = [p for p in imp if p[0] > cut]
    past = [p for p in imp if p[0] <= cut and p[0] > NOW - timedelta(seconds=cfg.spike_history)]
    if len(recent) >= 2 and len(past) >= 2:
        r_kwh, r_s = recent[-1][1] - recent[0][1], _span(recent)
        p_kwh, p_s = past[-1][1] - past[0][1], _span(past)
        if (
            r_s > 0
            and p_s > 0
            and p_kwh > 0
            and r_kwh >= cfg.spike_min_kwh
            and r_kwh / r_s > cfg.spike_factor * p_kwh / p_s
        ):
            found["consumption_spike"].add(m)


async def bench_rules(
    conn: asyncpg.Connection, meters: int = 100_000, areas: int = 1_000
) -> dict[str, float]:
    """Seed, then time one SQL rules pass against the row-by-row baseline; prints and returns the
    figures (seconds). The findings of both must agree.

    The pass reads the hourly summary (``reading_hours``), which it keeps up to date itself: as in
    the daemon, the summary of the day is brought up to date by the pass after each cycle, so the pass
    timed here is the one after the day's last cycle (the summary of the earlier hours already folded,
    the last hour folded by this pass). The fold of the whole day from nothing (a rebuild: what a
    pass costs after the summary was lost, or at the first pass after an upgrade) is timed apart,
    and the COPY of the last cycle's readings too (the readings trigger writes the dirty log)."""
    began = time.perf_counter()
    last_cycle = await _seed(conn, meters, areas)
    seeded = time.perf_counter() - began

    began = time.perf_counter()
    await fold(conn, hour_start(NOW - timedelta(seconds=max(CFG.window, CFG.spike_history))), NOW)
    rebuild = time.perf_counter() - began

    began = time.perf_counter()
    await conn.copy_records_to_table("readings", records=last_cycle, columns=READING_COLUMNS)
    stored = time.perf_counter() - began

    began = time.perf_counter()
    outcomes = await run_rules(conn, CFG, ZONE, NOW + PASS_DELAY)
    sql = time.perf_counter() - began
    folded = await conn.fetchval("SELECT count(*) FROM reading_hours WHERE hour_end = $1", NOW)
    assert folded == meters * 8, folded  # the pass folded the last hour in
    assert all(not isinstance(o, str) for o in outcomes.values()), outcomes
    opened = {
        rule: {
            r["meter_id"] for r in await conn.fetch("SELECT meter_id FROM exceptions WHERE rule = $1", rule)
        }
        for rule in READING_RULES
    }

    params = (NOW + PASS_DELAY, CFG.window, CFG.spike_window, CFG.spike_history, CFG.register_tolerance_kwh)
    began = time.perf_counter()
    await summarise_window(conn, *params)  # nothing left to fold: the window summary alone
    from_hours = time.perf_counter() - began
    await drop_window_summary(conn)
    began = time.perf_counter()
    await conn.execute(WINDOW_SUMMARY_FROM_READINGS.format(table="bench_window"), *params)
    from_readings = time.perf_counter() - began
    await conn.execute("DROP TABLE bench_window")

    began = time.perf_counter()
    baseline = await _row_by_row(conn)
    python = time.perf_counter() - began
    assert baseline == opened, {r: (len(baseline[r]), len(opened[r])) for r in READING_RULES}

    await conn.execute("INSERT INTO reading_hours_dirty (lo, hi) VALUES ($1, $1)", NOW)
    began = time.perf_counter()
    await fold(conn, hour_start(NOW - timedelta(seconds=max(CFG.window, CFG.spike_history))), NOW)
    fold_hour = time.perf_counter() - began

    await conn.execute("INSERT INTO reading_hours_dirty (lo, hi) VALUES ($1, $1)", NOW)
    began = time.perf_counter()
    await run_rules(conn, CFG, ZONE, NOW)  # the last hour folded again, the window ending on the hour
    on_the_hour = time.perf_counter() - began

    full = CFG.model_copy(update={"rules": list(ExceptionsConfig().rules), "area_days": 1})
    began = time.perf_counter()
    await run_rules(conn, full, ZONE, NOW + timedelta(minutes=1))
    whole = time.perf_counter() - began

    rows = meters * (97 * 2 + 6)
    print(
        f"{meters:,} meters in {areas:,} areas, {rows:,} readings (one day of 96 intervals),"
        f" seeded in {seeded:.1f} s"
    )
    print(f"findings: {', '.join(f'{r} {len(opened[r])}' for r in READING_RULES)} (SQL and Python agree)")
    print(f"{'the last cycle stored (COPY)':42s} {stored:8.2f} s  ({len(last_cycle):,} readings)")
    print(f"{'six reading rules, SQL pass (incr.)':42s} {sql:8.2f} s  {python / sql:6.1f}x the baseline")
    print(f"{'  the same pass at the cycle instant':42s} {on_the_hour:8.2f} s  {python / on_the_hour:6.1f}x")
    print(f"{'  its fold of the last hour (every meter)':42s} {fold_hour:8.2f} s")
    print(f"{'  its window summary, from the hours':42s} {from_hours:8.2f} s")
    print(f"{'  the same from every reading (before)':42s} {from_readings:8.2f} s")
    print(f"{'the hourly summary rebuilt (the whole day)':42s} {rebuild:8.2f} s")
    print(f"{'rebuild + pass (from nothing)':42s} {rebuild + sql:8.2f} s  {python / (rebuild + sql):6.1f}x")
    print(f"{'the same, row by row in Python':42s} {python:8.2f} s  (baseline)")
    print(f"{'all twelve rules + the day line loss':42s} {whole:8.2f} s")
    return {
        "seed_s": seeded,
        "stored_s": stored,
        "rebuild_s": rebuild,
        "sql_s": sql,
        "on_the_hour_s": on_the_hour,
        "fold_hour_s": fold_hour,
        "window_from_hours_s": from_hours,
        "window_from_readings_s": from_readings,
        "python_s": python,
        "all_rules_s": whole,
    }


async def _run(args: argparse.Namespace, dsn: str, _spool: Path) -> None:
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await bench_rules(conn, args.meters, args.areas)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--meters", type=int, default=2_000)
    parser.add_argument("--areas", type=int, default=20)
    run_on_throwaway_server(_run, parser.parse_args())


if __name__ == "__main__":
    main()
