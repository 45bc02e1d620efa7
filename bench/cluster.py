"""Cluster benchmark: 1, 2 and 4 ``headend run`` daemons (``[cluster] enabled``) over one simulated fleet.

The fleet: ``--meters`` DL/T 645 meters on ``--channels`` TCP buses, served by ``--sims`` simulator
processes of their own (this script with ``--serve``). The daemons are real ``headend run`` processes
on one throwaway embedded PostgreSQL. Sequence:

1. one daemon; measured over ``--window`` seconds after the leases settled: readings stored per second
   (counted in the database) and CPU seconds of the daemons per reading (``/proc/<pid>/stat``);
2. a second daemon joins: lease moves (``lease_moves``) against the fair share ``ceil(channels / 2)``;
   measured again;
3. two more join (moves of each join against its fair share); measured with four;
4. kill -9 one daemon: take-over time (until every channel it held is leased by a survivor, and until
   a reading of each of its channels is stored again);
5. SIGTERM another (graceful leave): moves against the channels it held.

The polling interval (``--interval``) is short so that reading the fleet is CPU-bound, not a matter of
waiting for the next cycle. Run ``uptime`` beside the figures: on a shared machine they vary.

Usage: python bench/cluster.py [--meters 8000] [--channels 400] [--sims 2] [--window 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import asyncpg
from throwaway import run_on_throwaway_server

from headend.inventory import import_inventory, read_inventory
from headend.store.migrate import migrate

RENEW_S = 2.0  # the defaults of [cluster]
LEASE_S = 8.0
SETTLE_S = 180.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


async def serve(first: int, count: int, meters: int) -> None:
    """The ``--serve`` mode: ``count`` buses of ``meters`` meters in this process; one JSON line."""
    from simulators import BusSpec, start_bus

    buses = [await start_bus(BusSpec(meters=meters, seed=first + n, history_days=0)) for n in range(count)]
    line = [{"url": b.url, "meters": [m.address for m in b.meters]} for b in buses]
    print(json.dumps(line), flush=True)
    await asyncio.Event().wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Fleet:
    """The simulator processes and the inventory they serve."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.buses: list[dict[str, object]] = []
        per_bus = args.meters // args.channels
        per_sim = math.ceil(args.channels / args.sims)
        for s in range(args.sims):
            count = min(per_sim, args.channels - s * per_sim)
            cmd = [sys.executable, __file__, "--serve", str(1000 + s * per_sim), str(count), str(per_bus)]
            self.procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
        for proc in self.procs:
            assert proc.stdout is not None
            self.buses += json.loads(proc.stdout.readline())

    def inventory(self, path: Path) -> Path:
        lines = []
        for n, bus in enumerate(self.buses):
            lines += ["[[channels]]", f'name = "bus-{n}"', f'url = "{bus["url"]}"', ""]
            for address in bus["meters"]:  # type: ignore[attr-defined]
                lines += ["[[meters]]", f'channel = "bus-{n}"', 'protocol = "dlt645-2007"']
                lines += [f'address = "{address}"', 'model = "dlt645-generic"', ""]
        path.write_text("\n".join(lines))
        return path

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.wait()


def start_daemon(name: str, dsn: str, base: Path, interval: float) -> subprocess.Popen[bytes]:
    config = base / f"{name}.toml"
    config.write_text(
        f'[database]\ndsn = "{dsn}"\nspool_dir = "{base / f"spool-{name}"}"\n'
        f'[polling]\ninterval = "{interval:g}s"\noffset = "0s"\ninventory_reload = "1h"\n'
        '[read_plans.default]\nquantities = ["energy_import_kwh"]\n'
        "[backfill]\nenabled = false\n[clock]\nenabled = false\n[events]\nenabled = false\n"
        '[timeouts]\ninitial = "1s"\nmaximum = "3s"\n'
        f'[cluster]\nenabled = true\nrenew = "{RENEW_S:g}s"\nlease = "{LEASE_S:g}s"\n'
        f'[metrics]\nport = {free_port()}\n[logging]\nformat = "json"\nlevel = "warning"\n'
    )
    env = dict(os.environ, HEADEND_STATE_DIR=str(base / f"state-{name}"))
    log = (base / f"{name}.log").open("wb")
    cmd = [sys.executable, "-m", "headend.cli", "run", "--config", str(config)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)


async def settled(conn: asyncpg.Connection, pids: set[int], channels: int) -> None:
    """Wait until every channel is leased to one of ``pids`` (live), each within its fair share, and
    no lease moved for three renewals."""
    share = math.ceil(channels / len(pids))
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        rows = await conn.fetch(
            "SELECT owner, count(*) AS n FROM channel_leases"
            " WHERE expires_at > clock_timestamp() GROUP BY owner"
        )
        held = {int(r["owner"].split(":")[-2]): int(r["n"]) for r in rows}
        quiet = await conn.fetchval(
            "SELECT coalesce(max(at), '-infinity') < clock_timestamp() - $1::interval FROM lease_moves",
            timedelta(seconds=3 * RENEW_S),
        )
        if set(held) == pids and sum(held.values()) == channels and max(held.values()) <= share and quiet:
            return
        await asyncio.sleep(0.5)
    print(f"not settled within {SETTLE_S:g} s: leases held {held}", flush=True)


async def measure(conn: asyncpg.Connection, pids: list[int], window: float) -> tuple[float, float]:
    """(readings stored per second, daemon CPU microseconds per reading) over ``window`` seconds."""
    count = "SELECT count(*) FROM readings"
    stored0, cpu0, t0 = await conn.fetchval(count), sum(map(cpu_of, pids)), time.monotonic()
    await asyncio.sleep(window)
    stored1, cpu1, t1 = await conn.fetchval(count), sum(map(cpu_of, pids)), time.monotonic()
    stored = max(1, stored1 - stored0)
    return stored / (t1 - t0), (cpu1 - cpu0) / stored * 1e6


async def moves_since(conn: asyncpg.Connection, since: object) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM lease_moves"
            " WHERE at > $1 AND from_owner IS NOT NULL AND from_owner <> to_owner",
            since,
        )
    )


async def run(args: argparse.Namespace, dsn: str, spool: Path) -> None:
    base = spool.parent
    base.mkdir(parents=True, exist_ok=True)
    await migrate(dsn)
    fleet = Fleet(args)
    daemons: dict[str, subprocess.Popen[bytes]] = {}
    conn = await asyncpg.connect(dsn)
    report: dict[str, object] = {
        "meters": args.meters,
        "channels": args.channels,
        "interval_s": args.interval,
    }
    try:
        await import_inventory(conn, read_inventory(fleet.inventory(base / "inv.toml")))
        rates: dict[int, tuple[float, float]] = {}
        joins: list[dict[str, int]] = []
        for k, name in enumerate(("a", "b", "c", "d"), start=1):
            since = await conn.fetchval("SELECT clock_timestamp()")
            daemons[name] = start_daemon(name, dsn, base, args.interval)
            await settled(conn, {p.pid for p in daemons.values()}, args.channels)
            if k > 1:
                joins.append(
                    {
                        "daemons": k,
                        "moves": await moves_since(conn, since),
                        "fair": math.ceil(args.channels / k),
                    }
                )
            if k in (1, 2, 4):
                await asyncio.sleep(2 * args.interval)  # the new owners' first cycles
                rates[k] = await measure(conn, [p.pid for p in daemons.values()], args.window)
                print(
                    f"{k} daemon(s): {rates[k][0]:,.0f} readings/s, {rates[k][1]:,.0f} us CPU/reading",
                    flush=True,
                )
        report["rates"] = {
            k: {"readings_per_s": round(r[0]), "cpu_us_per_reading": round(r[1])} for k, r in rates.items()
        }
        report["joins"] = joins
        # kill -9 one daemon: its channels leased by survivors, then read again
        victim = daemons.pop("a")
        held = [
            r["channel_id"]
            for r in await conn.fetch(
                "SELECT channel_id FROM channel_leases"
                " WHERE owner LIKE $1 AND expires_at > clock_timestamp()",
                f"%:{victim.pid}:%",
            )
        ]
        victim.kill()
        await asyncio.to_thread(victim.wait)
        killed = time.monotonic()
        killed_at = await conn.fetchval("SELECT clock_timestamp()")
        leased = read = None
        while read is None:
            if leased is None and not await conn.fetchval(
                "SELECT count(*) FROM unnest($1::int[]) c LEFT JOIN channel_leases l ON l.channel_id = c"
                " AND l.expires_at > clock_timestamp() AND l.owner NOT LIKE $2 WHERE l.owner IS NULL",
                held,
                f"%:{victim.pid}:%",
            ):
                leased = time.monotonic() - killed
            if leased is not None and not await conn.fetchval(
                "SELECT count(*) FROM unnest($1::int[]) c WHERE NOT EXISTS (SELECT 1 FROM meters m"
                " JOIN readings r ON r.meter_id = m.id WHERE m.channel_id = c AND r.received_at > $2)",
                held,
                killed_at,
            ):
                read = time.monotonic() - killed
            await asyncio.sleep(0.2)
        report["takeover"] = {
            "channels": len(held),
            "leased_s": round(leased, 1),
            "read_again_s": round(read, 1),
        }
        print(
            f"kill -9: {len(held)} channels leased again in {leased:.1f} s, read again in {read:.1f} s",
            flush=True,
        )
        await settled(conn, {p.pid for p in daemons.values()}, args.channels)
        # graceful leave
        leaving = daemons.pop("b")
        count = await conn.fetchval(
            "SELECT count(*) FROM channel_leases WHERE owner LIKE $1 AND expires_at > clock_timestamp()",
            f"%:{leaving.pid}:%",
        )
        since = await conn.fetchval("SELECT clock_timestamp()")
        leaving.send_signal(signal.SIGTERM)
        await asyncio.to_thread(leaving.wait)
        await settled(conn, {p.pid for p in daemons.values()}, args.channels)
        report["leave"] = {"held": int(count), "moves": await moves_since(conn, since)}
        print(json.dumps(report), flush=True)
    finally:
        for proc in daemons.values():
            proc.kill()
            proc.wait()
        if args.logs is not None:  # the daemons' warnings and every lease move, for a look afterwards
            args.logs.mkdir(parents=True, exist_ok=True)
            for log in base.glob("*.log"):
                shutil.copy(log, args.logs / log.name)
            moves = await conn.fetch("SELECT * FROM lease_moves ORDER BY at")
            (args.logs / "lease_moves.json").write_text(json.dumps([dict(m) for m in moves], default=str))
        await conn.close()
        fleet.stop()


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        asyncio.run(serve(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=8000)
    parser.add_argument("--channels", type=int, default=400)
    parser.add_argument("--sims", type=int, default=2)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--logs", type=Path, help="copy the daemons' logs and the lease moves here")
    run_on_throwaway_server(run, parser.parse_args())


if __name__ == "__main__":
    main()
