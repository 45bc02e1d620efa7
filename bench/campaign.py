"""Campaign benchmark: a time-of-use download campaign to N meters over B line-timed buses.

The buses are simulated DL/T 645-2007 TCP buses (2400 baud 8E1, bytes released at the line rate,
meters answering after ``--turnaround`` s), served by ``--procs`` simulator processes (this script
with ``--serve``). The daemon's engine runs in this process with the campaign runner
(``headend.params.runner:run``) against an embedded PostgreSQL; the campaign is created, approved and
started in the database before the engine starts. While it runs, a read cycle of every meter (the
total energy register) is started every ``--read-every`` seconds: each must finish before the next
is due ("on time").

Theoretical minimum: one meter's attempt is first run against an in-process bus without line timing,
every frame counted (requests and replies); its line time is chars x 11 bits / 2400 baud plus the
turnaround of each exchange. A bus's minimum is that times its meters; the campaign's is the
busiest bus's. Printed: elapsed time, the ratio minimum / elapsed (target >= 90 % of line
capacity), the same ratio counting the read cycles' frames too, and the read cycles' durations.

Usage: python bench/campaign.py [--meters 1000] [--buses 20] [--procs 2] [--pace 5] [--read-every 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from headend.config import validate_config
from headend.drivers import Credentials, make_driver
from headend.engine.engine import Engine
from headend.engine.ports import DriverPort
from headend.inventory import ChannelEntry, Inventory, MeterEntry, import_inventory
from headend.params.runner import attempt
from headend.params.tou import parse_set
from headend.store import campaigns
from headend.store.embedded import EmbeddedPostgres
from headend.store.migrate import migrate
from headend.store.param_sets import add_version
from headend.store.writer import ReadingWriter
from headend.transport import open_channel
from protocols.dlt645 import build_read, build_read_response
from simulators import BusSpec, start_bus

BAUD = 2400
BITS_PER_CHAR = 11  # 8E1
PASSWORD = "000000"  # the simulators' default level-02 password
GAP_MS = 5
T0 = datetime(2026, 6, 1, tzinfo=UTC)
SET = {  # two seasons, two daily tables of four switch points, four tariffs, weekends
    "seasons": [{"start": "01-01", "table": 1}, {"start": "06-01", "table": 2}],
    "daily_tables": [
        [{"start": "00:00", "tariff": 4}, {"start": "08:00", "tariff": 2},
         {"start": "18:00", "tariff": 1}, {"start": "22:00", "tariff": 3}],
        [{"start": "00:00", "tariff": 4}, {"start": "07:00", "tariff": 2},
         {"start": "19:00", "tariff": 1}, {"start": "23:00", "tariff": 3}],
    ],
    "rest_days": ["saturday", "sunday"],
    "rest_table": 1,
    "tariffs": 4,
}  # fmt: skip


def zone_at_noon() -> str:
    """A fixed-offset zone whose local hour is now 12: campaign windows open, no peak reading window."""
    offset = (12 - datetime.now(UTC).hour + 12) % 24 - 12
    return "Etc/GMT" + (f"{-offset:+d}" if offset else "")


async def serve(buses: int, meters: int, seed: int, turnaround: float) -> None:
    """Run ``buses`` line-timed TCP buses of ``meters`` meters; print their URLs and addresses."""
    running = []
    for index in range(buses):
        spec = BusSpec(meters=meters, seed=seed + index, line_timing=True, baud=BAUD, turnaround_s=turnaround)
        running.append(await start_bus(spec))
    print(
        json.dumps([{"url": b.url, "addresses": [m.address for m in b.meters]} for b in running]), flush=True
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for bus in running:
        await bus.stop()


async def calibrate(turnaround: float) -> tuple[int, int]:
    """(exchanges, line chars) of one meter's attempt, from a fresh simulated meter (no line timing)."""
    bus = await start_bus(BusSpec(meters=1, seed=9999, turnaround_s=turnaround))
    channel = open_channel(bus.url)
    frames: list[tuple[str, bytes]] = []
    channel.tap = lambda kind, frame: frames.append((kind, frame))  # type: ignore[attr-defined]
    driver = make_driver("dlt645-2007", channel, bus.meters[0].address, None, Credentials(2, PASSWORD))
    try:
        outcome = await attempt(driver, SET, datetime.now(UTC) + timedelta(days=1))
        if outcome.state != "verified":
            raise SystemExit(f"calibration meter: {outcome}")
    finally:
        await channel.close()
        await bus.stop()
    exchanges = sum(1 for kind, _ in frames if kind == "tx")
    return exchanges, sum(len(frame) for _kind, frame in frames)


def read_line_s(address: str, turnaround: float) -> float:
    chars = len(build_read(address, "00010000")) + len(build_read_response(address, "00010000", 0.0))
    return chars * BITS_PER_CHAR / BAUD + turnaround


async def prepare(dsn: str, sims: list[dict], switch_at: datetime) -> None:
    """Inventory, the parameter set and a running campaign over every meter (as the owner)."""
    conn = await asyncpg.connect(dsn)
    try:
        channels = [
            ChannelEntry(name=f"bus-{i}", url=f"{s['url']}?gap_ms={GAP_MS}") for i, s in enumerate(sims)
        ]
        meters = [
            MeterEntry(channel=f"bus-{i}", protocol="dlt645-2007", address=a, model="dlt645-generic")
            for i, s in enumerate(sims)
            for a in s["addresses"]
        ]
        await import_inventory(conn, Inventory(channels, meters))
        await add_version(conn, "bench", parse_set(SET).to_json(), "bench", None)
        set_id = int(await conn.fetchval("SELECT id FROM tou_parameter_sets WHERE name = 'bench'"))
        ids = [int(r["id"]) for r in await conn.fetch("SELECT id FROM meters ORDER BY id")]
        campaign = await campaigns.create(
            conn, "bench", set_id, switch_at, 3, "bench-creator", [(i, "bench") for i in ids]
        )
        await campaigns.approve(conn, campaign, "bench-approver")
        await campaigns.move(conn, campaign, "running")
    finally:
        await conn.close()


async def run(dsn: str, spool: Path, pace: int, read_every: float) -> tuple[float, list[float], dict]:
    """Start the engine, read every ``read_every`` s until the campaign is done; (elapsed, cycle
    durations, meters per state)."""
    config = validate_config(
        {
            "polling": {"interval": "1h", "inventory_reload": "1h"},
            "read_plans": {"default": {"quantities": ["energy_import_kwh"]}},
            "backfill": {"enabled": False},
            "clock": {"enabled": False},
            "events": {"enabled": False},
            "metrics": {"port": 0},
            "timeouts": {"initial": "1s", "maximum": "3s"},
            "engine": {"services": ["headend.params.runner:run"]},
            "campaigns": {"timezone": zone_at_noon(), "pace": pace},
        },
        "bench",
    )
    port = DriverPort(secrets=Credentials(2, PASSWORD))
    engine = Engine(config, dsn, ReadingWriter(dsn, spool_dir=spool), port)
    conn = await asyncpg.connect(dsn)
    cycles: list[float] = []

    async def reads() -> None:
        k = 0
        while True:
            started = time.perf_counter()
            engine.run_cycle(T0 + timedelta(minutes=15 * k))
            await engine.wait_cycles()
            cycles.append(time.perf_counter() - started)
            k += 1
            await asyncio.sleep(max(0.0, read_every - (time.perf_counter() - started)))

    await engine.start()
    started = time.perf_counter()
    reader = asyncio.create_task(reads())
    try:
        while await conn.fetchval("SELECT state FROM tou_campaigns WHERE name = 'bench'") != "done":
            await asyncio.sleep(0.5)
        elapsed = time.perf_counter() - started
        found = await conn.fetch("SELECT state, count(*) AS n FROM tou_campaign_meters GROUP BY state")
    finally:
        reader.cancel()
        await engine.stop()
        await conn.close()
    return elapsed, cycles, {r["state"]: r["n"] for r in found}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--buses", type=int, default=20)
    parser.add_argument("--procs", type=int, default=2, help="simulator processes")
    parser.add_argument("--pace", type=int, default=5, help="[campaigns] pace")
    parser.add_argument("--read-every", type=float, default=60.0, help="seconds between read cycles")
    parser.add_argument("--turnaround", type=float, default=0.02, help="the meters' answer delay (s)")
    parser.add_argument(
        "--serve", nargs=3, type=int, metavar=("BUSES", "METERS", "SEED"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(*args.serve, args.turnaround))
        return
    per_bus = args.meters // args.buses
    exchanges, chars = asyncio.run(calibrate(args.turnaround))
    meter_s = chars * BITS_PER_CHAR / BAUD + exchanges * args.turnaround
    base = Path(tempfile.mkdtemp(prefix="headend-bench-"))
    base.chmod(0o755)
    server = EmbeddedPostgres(base / "pg")
    procs: list[subprocess.Popen[str]] = []
    try:
        server.start()
        server.psql("CREATE DATABASE bench_campaign")
        dsn = server.dsn("bench_campaign")
        asyncio.run(migrate(dsn))
        shares = [args.buses // args.procs + (i < args.buses % args.procs) for i in range(args.procs)]
        for i, share in enumerate(s for s in shares if s):
            command = [sys.executable, __file__, "--serve", str(share), str(per_bus), str(1 + 100 * i)]
            procs.append(
                subprocess.Popen(
                    [*command, "--turnaround", str(args.turnaround)], stdout=subprocess.PIPE, text=True
                )
            )
        sims = [bus for proc in procs for bus in json.loads(proc.stdout.readline())]  # type: ignore[union-attr]
        asyncio.run(prepare(dsn, sims, datetime.now(UTC) + timedelta(days=1)))
        elapsed, cycles, states = asyncio.run(run(dsn, base / "spool", args.pace, args.read_every))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        server.stop("fast")
        shutil.rmtree(base, ignore_errors=True)
    minimum = per_bus * meter_s
    reads_s = len(cycles) * per_bus * read_line_s(sims[0]["addresses"][0], args.turnaround)
    meters, turnaround_ms = per_bus * args.buses, args.turnaround * 1000
    share, with_reads = minimum / elapsed, (minimum + reads_s) / elapsed
    late = [c for c in cycles if c > args.read_every]
    longest = max(cycles, default=0.0)
    print(f"campaign: {meters} meters on {args.buses} buses at {BAUD} baud 8E1, {args.procs} simulator")
    print(f"  processes, pace {args.pace}, turnaround {turnaround_ms:.0f} ms")
    print(f"  per meter: {exchanges} exchanges, {chars} chars -> {meter_s:.2f} s of line time")
    print(f"  meters: {states}")
    print(f"  elapsed {elapsed:.1f} s; theoretical minimum {minimum:.1f} s -> {share:.0%} of line capacity")
    print(f"  (target >= 90%); counting the read cycles' frames too: {with_reads:.0%}")
    print(f"  reads every {args.read_every:.0f} s: {len(cycles)}, longest {longest:.1f} s, late {len(late)}")


if __name__ == "__main__":
    main()
