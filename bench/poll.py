"""Polling benchmark: the engine against simulated meters in other processes, with same-run baselines.

(a) ``fleet``: N meters on C TCP channels (one ``headend sim dlt645 --tcp`` process per channel, no
    line timing). One full cycle through the engine (drivers, codec, scheduling, writer, embedded
    PostgreSQL): wall time, readings/s and CPU microseconds of this process per stored reading.
    Baseline: one channel read meter by meter with the same drivers and a per-reading INSERT.
    Targets: <= 100 us CPU per reading, cycle < 30 s for 10,000 meters. Figures: the median of three
    cycles after the first (which also connects every channel), for two read plans: the total energy
    register alone (one exchange per reading) and a time-of-use plan, total + 4 tariffs (one block
    read, 00 01 FF 00, per meter: five readings per exchange). The floor: a bare asyncio client doing
    only the exchanges on the same channels (no driver, codec, queue or database).
(b) ``bus``: one line-timed 2400 baud 8E1 pty bus with 32 meters answering after 100 ms. Achieved
    reads/s vs the theoretical maximum from the frame sizes (request + reply characters x 11 bits /
    2400 baud + turnaround). Target >= 90 %.

Usage: python bench/poll.py [--part fleet|bus|all] [--meters 10000] [--channels 100]
Needs the simulators (``headend sim``) and the drivers (``headend.drivers``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from headend.config import validate_config
from headend.engine.engine import Engine
from headend.engine.model import ChannelSpec, MeterSpec
from headend.engine.ports import DriverPort, values_of
from headend.inventory import ChannelEntry, Inventory, MeterEntry, import_inventory
from headend.store.embedded import EmbeddedPostgres
from headend.store.migrate import migrate
from headend.store.writer import ReadingWriter
from protocols.dlt645 import build_read, build_read_response

ENERGY_DI = "00010000"
ENERGY = "energy_import_kwh"
GAP_S = 0.05  # the channels' default inter-frame gap
TOU = [ENERGY, *(f"energy_import_t{t}_kwh" for t in range(1, 5))]
BITS_PER_CHAR = 11  # 8E1: start + 8 data + parity + stop
T0 = datetime(2026, 6, 1, tzinfo=UTC)
STEADY_CYCLES = 3  # fleet cycles measured after the first (CPU time on a shared machine is noisy)


@dataclass(frozen=True)
class CycleFigures:
    """One measured cycle: wall and CPU seconds of this process (CPU = user + kernel), readings
    stored and bus busy seconds summed over the channels."""

    wall: float
    cpu: float
    kernel: float
    stored: int
    busy: float

    @property
    def cpu_us_per_reading(self) -> float:
        return self.cpu / self.stored * 1e6


def cpu_seconds() -> tuple[float, float]:
    """(user + kernel, kernel) CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_stime


def spawn_sim(args: list[str]) -> subprocess.Popen[str]:
    """Start ``headend sim dlt645 ... --json`` (it prints one JSON line when ready)."""
    return subprocess.Popen(
        [sys.executable, "-m", "headend.cli", "sim", "dlt645", *args, "--json"],
        stdout=subprocess.PIPE,
        text=True,
    )


def sim_ready(proc: subprocess.Popen[str]) -> dict:
    """Wait for a simulator's JSON line."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"simulator exited: {' '.join(map(str, proc.args))}")
    return json.loads(line)


def start_sim(args: list[str]) -> tuple[subprocess.Popen[str], dict]:
    """Start a simulator and return it with its JSON line."""
    proc = spawn_sim(args)
    return proc, sim_ready(proc)


def fresh_database(server: EmbeddedPostgres, name: str) -> str:
    """A new migrated database on the benchmark server; returns its DSN."""
    server.psql(f"CREATE DATABASE {name}")
    dsn = server.dsn(name)
    asyncio.run(migrate(dsn))
    return dsn


def meter_addresses(info: dict) -> list[str]:
    return [m["address"] if isinstance(m, dict) else str(m) for m in info["meters"]]


def engine_config(quantities: list[str]) -> object:
    return validate_config(
        {
            "polling": {"interval": "1h"},
            "read_plans": {"default": {"quantities": quantities}},
            "backfill": {"enabled": False},
            "clock": {"enabled": False},
            "events": {"enabled": False},
            "metrics": {"port": 0},
            "timeouts": {"initial": "1s", "maximum": "3s"},
        },
        "bench",
    )


async def run_cycles(
    dsn: str, spool: Path, inventory: Inventory, quantities: list[str], cycles: int, first: datetime = T0
) -> list[CycleFigures]:
    """Import the inventory, run ``cycles`` hourly cycles from ``first``; the figures of each."""
    conn = await asyncpg.connect(dsn)
    await import_inventory(conn, inventory)
    engine = Engine(engine_config(quantities), dsn, ReadingWriter(dsn, spool_dir=spool), DriverPort())
    await engine.start()
    results = []
    try:
        for k in range(cycles):
            ts = first + timedelta(hours=k)
            busy0 = sum(w.busy_seconds for w in engine.workers.values())
            (cpu0, kernel0), wall0 = cpu_seconds(), time.perf_counter()
            engine.run_cycle(ts)
            await engine.wait_cycles()
            await engine.writer.flush()
            wall, (cpu, kernel) = time.perf_counter() - wall0, cpu_seconds()
            busy = sum(w.busy_seconds for w in engine.workers.values()) - busy0
            stored = await conn.fetchval("SELECT count(*) FROM readings WHERE ts = $1", ts)
            results.append(CycleFigures(wall, cpu - cpu0, kernel - kernel0, stored, busy))
    finally:
        await engine.stop()
        await conn.close()
    return results


@dataclass(frozen=True)
class Baseline:
    """The naive way, measured in the same run: readings/s and CPU microseconds per reading."""

    rate: float
    cpu_us: float


async def naive_baseline(dsn: str, url: str, addresses: list[str]) -> Baseline:
    """Read one channel meter by meter with the same drivers, one INSERT per reading."""
    port = DriverPort()
    conn = await asyncpg.connect(dsn)
    channel = await port.open_channel(ChannelSpec(0, "baseline", url))
    meter_ids = {r["address"]: r["id"] for r in await conn.fetch("SELECT id, address FROM meters")}
    qid = await conn.fetchval("SELECT id FROM quantities WHERE name = 'energy_import_kwh'")
    sid = await conn.fetchval("SELECT id FROM reading_sources WHERE name = 'poll'")
    started, (cpu0, _kernel) = time.perf_counter(), cpu_seconds()
    for address in addresses:
        meter = MeterSpec(meter_ids[address], 0, "dlt645-2007", address, None, "dlt645-generic", T0)
        value = values_of(await port.make_driver(channel, meter).read([ENERGY]))[ENERGY]
        await conn.execute(
            "INSERT INTO readings (meter_id, quantity_id, ts, value, source_id) VALUES "
            "($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            meter.id,
            qid,
            T0 + timedelta(days=1),  # same partition week as the cycles, a distinct interval
            value,
            sid,
        )
    elapsed, cpu = time.perf_counter() - started, cpu_seconds()[0] - cpu0
    await conn.close()
    close = getattr(channel, "close", None)
    if close is not None and asyncio.iscoroutine(result := close()):
        await result
    return Baseline(len(addresses) / elapsed, cpu / len(addresses) * 1e6)


class _ReplyWaiter(asyncio.Protocol):
    """The least a client can do per exchange: resolve a future once a whole frame is in."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reply: asyncio.Future[bytes] | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.buffer.endswith(b"\x16") and len(self.buffer) >= 16 and self.reply and not self.reply.done():
            self.reply.set_result(self.buffer)
            self.buffer = b""


async def bare_exchanges(sims: list[tuple[str, list[str]]], gap_s: float) -> float:
    """CPU microseconds per exchange of a bare asyncio client (sleep the gap, send a prebuilt read,
    await the reply; no driver, codec, queue, bookkeeping or database): the floor under (a)."""
    loop = asyncio.get_running_loop()

    async def one_channel(url: str, addresses: list[str]) -> None:
        host, port = url.removeprefix("tcp://").split(":")
        transport, link = await loop.create_connection(_ReplyWaiter, host, int(port))
        for request in [build_read(a, ENERGY_DI) for a in addresses]:
            await asyncio.sleep(gap_s)
            link.reply = loop.create_future()
            transport.write(request)
            await link.reply
        transport.close()

    cpu0, _kernel = cpu_seconds()
    await asyncio.gather(*(one_channel(url, addresses) for url, addresses in sims))
    return (cpu_seconds()[0] - cpu0) / sum(len(a) for _u, a in sims) * 1e6


def part_fleet(dsn: str, base: Path, meters: int, channels: int) -> None:
    per_channel = meters // channels
    sims = []
    procs: list[subprocess.Popen[str]] = []
    try:
        for c in range(channels):  # all start at once; then collect their addresses
            args = ["--meters", str(per_channel), "--tcp", "127.0.0.1:0", "--seed", str(c + 1)]
            procs.append(spawn_sim([*args, "--history-days", "1"]))
        for proc in procs:
            info = sim_ready(proc)
            sims.append((proc, info["url"], meter_addresses(info)))
        inventory = Inventory(
            [ChannelEntry(name=f"bus-{c}", url=url) for c, (_p, url, _a) in enumerate(sims)],
            [
                MeterEntry(channel=f"bus-{c}", protocol="dlt645-2007", address=a, model="dlt645-generic")
                for c, (_p, _u, addrs) in enumerate(sims)
                for a in addrs
            ],
        )
        plans = {
            "energy total (one DI per meter)": asyncio.run(
                run_cycles(dsn, base / "spool-a", inventory, [ENERGY], 1 + STEADY_CYCLES)
            ),
            "time-of-use: total + 4 tariffs (one block read per meter)": asyncio.run(
                run_cycles(dsn, base / "spool-t", inventory, TOU, 1 + STEADY_CYCLES, T0 + timedelta(days=2))
            ),
        }
        baseline = asyncio.run(naive_baseline(dsn, sims[0][1], sims[0][2]))
        floor = asyncio.run(bare_exchanges([(url, addrs) for _p, url, addrs in sims], GAP_S))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
    print(f"(a) {meters} meters on {channels} TCP channels")
    print(
        f"    baseline (one channel, sequential, INSERT per reading): {baseline.rate:,.0f} readings/s, "
        f"{baseline.cpu_us:.0f} us CPU per reading"
    )
    print(
        f"    floor (bare asyncio exchange on the same channels: gap sleep, send, await the reply): "
        f"{floor:.1f} us CPU per exchange"
    )
    for label, results in plans.items():
        report_fleet(label, results, baseline)


def report_fleet(label: str, results: list[CycleFigures], baseline: Baseline) -> None:
    """Print one read plan's figures: the median steady cycle (the first also connects every channel)."""
    steady = sorted(results[1:], key=lambda r: r.cpu_us_per_reading)
    median = steady[len(steady) // 2]
    spread = ", ".join(f"{r.cpu_us_per_reading:.0f}" for r in results[1:])
    rate, cpu_us = median.stored / median.wall, median.cpu_us_per_reading
    print(f"    plan {label}: {median.stored} readings per cycle")
    print(
        f"      cycle {median.wall:.2f} s (target < 30 s), {rate:,.0f} readings/s "
        f"({rate / baseline.rate:.1f}x baseline) [first cycle {results[0].wall:.2f} s]"
    )
    print(
        f"      {cpu_us:.1f} us CPU per reading (target <= 100 us; {cpu_us / baseline.cpu_us:.2f}x the "
        f"baseline's), of which kernel {median.kernel / median.stored * 1e6:.1f} us"
    )
    print(f"      median of {len(steady)} steady cycles; CPU us per reading per cycle: {spread}")


def part_bus(dsn: str, base: Path) -> None:
    proc, info = start_sim(
        ["--meters", "32", "--pty", "--baud", "2400", "--line-timing", "--turnaround", "0.1"]
    )
    try:
        addresses = meter_addresses(info)
        # a pty cannot take parity E here (termios EINVAL): the simulator's line timing models 8E1
        url = f"{info['url']}?baud=2400&parity=N&gap_ms=5"
        inventory = Inventory(
            [ChannelEntry(name="bus-2400", url=url)],
            [
                MeterEntry(channel="bus-2400", protocol="dlt645-2007", address=a, model="dlt645-generic")
                for a in addresses
            ],
        )
        results = asyncio.run(run_cycles(dsn, base / "spool-b", inventory, [ENERGY], 3))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    chars = len(build_read(addresses[0], ENERGY_DI)) + len(build_read_response(addresses[0], ENERGY_DI, 0.0))
    per_read = chars * BITS_PER_CHAR / 2400 + 0.1
    theoretical = 1 / per_read
    reads = sum(r.stored for r in results[1:])
    busy = sum(r.busy for r in results[1:])
    achieved = reads / busy
    print(
        f"(b) 2400 8E1, 32 meters, 100 ms turnaround: {chars} chars per read -> theoretical "
        f"{theoretical:.2f} reads/s; achieved {achieved:.2f} reads/s = {achieved / theoretical:.0%}"
        " (target >= 90%)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["fleet", "bus", "all"], default="all")
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--channels", type=int, default=100)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="headend-bench-"))
    base.chmod(0o755)
    server = EmbeddedPostgres(base / "pg")
    try:
        server.start()
        if args.part in ("fleet", "all"):
            part_fleet(fresh_database(server, "bench_fleet"), base, args.meters, args.channels)
        if args.part in ("bus", "all"):
            part_bus(fresh_database(server, "bench_bus"), base)
    finally:
        server.stop("fast")
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
