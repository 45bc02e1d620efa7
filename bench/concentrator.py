"""Concentrator benchmark: the 1376.1 link and driver against simulated concentrators in other processes.

(a) ``forward``: one concentrator (``headend sim concentrator --listen``), its meters at 2400 baud 8E1
    with line timing, ``--latency-ms`` network delay per answer. Forwarded reads (AFN 10 F1 carrying
    the DL/T 645 driver's read of one item) one after another through ``ConcentratorMeterDriver``:
    achieved reads/s vs the theoretical maximum of one concentrator, 1 / (latency + line time of the
    DL/T 645 request and reply at 2400 baud + the meter's turnaround), from the same frames. Target
    >= 90 %.
(b) ``freeze``: N concentrators x 32 meters (``--concentrators``, spread over ``--processes``
    simulator processes), ``--latency-ms`` each: the daily-freeze collection (AFN 0D F161 of all 32
    Pn of a concentrator in one request, through ``PointBatch`` as the driver's backfill uses it) of
    every meter, all concentrators in parallel. Wall time and CPU microseconds of this process per
    reading (total + 4 tariffs = 5 readings per meter), against the same-run baseline: decoding the
    same answer frames alone (the codec's share). The simulators keep ``--history-days`` of load
    profile (default 1: the freezes do not need the curves, and a day costs most of a meter's start).
(d) ``curves``: N concentrators x 32 meters as in (b): a day of 15-minute power (F81), voltage
    (F89..F91) and current (F92..F94) curves of every meter, one multi-unit AFN 0D request per
    meter (``ConcentratorMeterDriver.curve_points``, as the backfill asks), all concentrators in
    parallel. Wall time and CPU microseconds of this process per point turned into a meter quantity
    (decoded, converted, ready for the writer), against the same-run baseline: decoding the same
    answer frames alone. With ``--store`` every meter's points also go through the daemon's
    ``ReadingWriter`` into a throwaway embedded PostgreSQL as they arrive (as the backfill stores
    them: quality ``backfilled``): wall and CPU then include the write, and the database server's
    CPU per stored point is printed beside it. The simulators' meters are single-phase, so phases B
    and C come back as no-data (EE) and are not counted as points.
(e) ``live``: one concentrator, ``--meters`` meters at 2400 baud 8E1 with line timing, ``--latency-ms``:
    one polling cycle of an instantaneous read plan (power, voltage A..C, current A..C, power factor)
    for every meter, read as the engine reads (one ``read`` per meter) two ways: forwarded DL/T 645
    reads (AFN 10 F1; the plan costs the driver one item read each for power and power factor and a
    block read each for voltage and current) and AFN 0C F25 batched over the concentrator's Pn. Link
    requests, frames in, and wall time per cycle; the meter line time the forwarding occupies.
(c) ``storm``: N concentrators (``--concentrators`` over ``--processes`` simulator processes, one
    meter each) dial in at once to one ``gdw1376`` listener in this process and log in (AFN 02 F1,
    confirmed by the listener): time from the first login until all N are bound, CPU of this process
    per login (accept + identification + confirmation + binding). Same-run baseline: the same number
    of DTUs (``headend sim dtu``, registration packet) dialling in to a ``dtu`` listener.

Usage: python bench/concentrator.py [--part forward|freeze|curves|live|storm|all] [--concentrators 20]
    [--processes 2] [--latency-ms 300] [--reads 40] [--history-days 1] [--store]
The issue's figure is 1,000 concentrators x 32 meters: ``--part freeze --concentrators 1000
--processes 8`` (``--part curves`` the same) and ``--part storm --concentrators 1000 --processes 4``
(sizes and figures in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
from throwaway import run_on_throwaway_server

from headend.drivers.gdw1376 import ConcentratorMeterDriver, batch_of, energy_values
from headend.store.migrate import migrate
from headend.store.reading import Reading
from headend.store.writer import ReadingWriter
from headend.transport import DialinHub
from headend.transport.concentrator import ConcentratorLink
from headend.transport.listener import Listener, ListenerSpec
from headend.transport.url import parse_channel_url
from protocols import dlt645
from protocols.gdw1376 import Afn, decode, unit

BAUD = 2400
CHAR_S = 11 / BAUD  # 8E1
METER_TURNAROUND_S = 0.05  # the simulator's meters
REGION = "0314"
FIRST_TERMINAL = 20000


def start_sims(
    count: int, processes: int, latency_ms: float, meters: int, history_days: int = 7
) -> tuple[list[subprocess.Popen[str]], list[dict]]:
    """``count`` listening concentrators in ``processes`` simulator processes; their descriptions (each
    simulator binds a port of the system's choosing and reports it: no probing that a test running
    beside the bench could race)."""
    procs: list[subprocess.Popen[str]] = []
    per = -(-count // processes)
    for index in range(0, count, per):
        n = min(per, count - index)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable, "-m", "headend.cli", "sim", "concentrator",
                    "--listen", "127.0.0.1:0", "--count", str(n),
                    "--address", f"{REGION}-{FIRST_TERMINAL + index}", "--meters", str(meters),
                    "--latency-ms", str(latency_ms), "--heartbeat", "600", "--json",
                    "--history-days", str(history_days),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
        )  # fmt: skip
    described: list[dict] = []
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        document = json.loads(line)
        described += document.get("concentrators", [document])
    return procs, described


def stop_sims(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=30)


def link_of(description: dict) -> ConcentratorLink:
    url = f"gdw1376+tcp://{description['listen']}?address={description['address']}&turnaround_ms=10000"
    return ConcentratorLink(parse_channel_url(url))


async def forwarded(description: dict, reads: int, latency_ms: float) -> None:
    link = link_of(description)
    meters = description["meters"]
    drivers = [ConcentratorMeterDriver(link, m["address"], pn=None, port=m["port"]) for m in meters]
    await drivers[0].read(["voltage_a_v"])  # connect and log in
    request = dlt645.build_read(meters[0]["address"], "02010100")
    reply = dlt645.build_read_response(meters[0]["address"], "02010100", 230.0)
    line_s = (len(request) + len(reply)) * CHAR_S
    theory_s = latency_ms / 1000 + line_s + METER_TURNAROUND_S
    started = time.perf_counter()
    for index in range(reads):
        values = await drivers[index % len(drivers)].read(["voltage_a_v"])
        assert "voltage_a_v" in values
    elapsed = time.perf_counter() - started
    await link.close()
    achieved = reads / elapsed
    maximum = 1 / theory_s
    print(f"(a) forwarded reads through one concentrator, {latency_ms:g} ms latency, {BAUD} baud 8E1 meters")
    print(
        f"    theoretical maximum {maximum:.2f} reads/s (latency {latency_ms:g} ms + line "
        f"{line_s * 1000:.0f} ms for {len(request)}+{len(reply)} bytes + turnaround "
        f"{METER_TURNAROUND_S * 1000:.0f} ms)"
    )
    print(
        f"    achieved {achieved:.2f} reads/s over {reads} reads = {achieved / maximum:.1%} of the maximum"
        " (target >= 90 %)"
    )


async def collect(links: list[ConcentratorLink], points: int, day: date) -> int:
    """Every meter's daily freeze of ``day`` (Pn 1..points of every concentrator); returns readings."""

    async def one(link: ConcentratorLink) -> int:
        batch = batch_of(link)
        for pn in range(1, points + 1):
            batch.register(pn)
        count = 0
        for pn in range(1, points + 1):
            reading = await batch.daily(pn, day)
            if reading is not None:
                count += len(energy_values(reading))
        return count

    counts = await asyncio.gather(*(one(link) for link in links))
    return sum(counts)


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sims_cpu_s(pids: list[int]) -> float:
    """User + kernel CPU seconds the simulator processes have used so far."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


async def freeze(descriptions: list[dict], latency_ms: float, sim_pids: list[int]) -> None:
    links = [link_of(d) for d in descriptions]
    points = min(len(d["meters"]) for d in descriptions)
    await asyncio.gather(*(link.open() for link in links))  # connect and log in first
    day = (datetime.now(UTC) + timedelta(hours=8)).date() - timedelta(days=1)
    captured: list[bytes] = []  # the answer frames, decoded again alone for the baseline
    original = ConcentratorLink._received

    def capture(self: ConcentratorLink, stream: object, raw: bytes) -> None:
        captured.append(raw)
        original(self, stream, raw)  # type: ignore[arg-type]

    ConcentratorLink._received = capture  # type: ignore[method-assign]
    sims_before, cpu_before, wall_before = sims_cpu_s(sim_pids), cpu_s(), time.perf_counter()
    readings = await collect(links, points, day)
    wall = time.perf_counter() - wall_before
    cpu = cpu_s() - cpu_before
    sims_cpu = sims_cpu_s(sim_pids) - sims_before
    ConcentratorLink._received = original  # type: ignore[method-assign]
    requests = sum(link.stats.requests for link in links)
    frames = sum(link.stats.frames_in for link in links)
    await asyncio.gather(*(link.close() for link in links))
    decode_started = time.process_time()
    for raw in captured:
        decode(raw)
    decode_cpu = time.process_time() - decode_started
    meters = len(links) * points
    print(
        f"(b) daily-freeze collection: {len(links)} concentrators x {points} meters = {meters} meters, "
        f"{latency_ms:g} ms latency, {len(sim_pids)} simulator process(es)"
    )
    print(
        f"    wall {wall:.2f} s ({requests} AFN 0D F161 requests, {frames} frames in, "
        f"{wall / (latency_ms / 1000):.1f}x one round trip); {readings} readings"
    )
    print(f"    CPU meanwhile: this process {cpu:.2f} s, the simulator processes {sims_cpu:.2f} s")
    per_reading = cpu / readings * 1e6 if readings else float("nan")
    baseline = decode_cpu / readings * 1e6 if readings else float("nan")
    print(
        f"    CPU {per_reading:.1f} us per reading in this process; decoding the same frames alone "
        f"{baseline:.1f} us per reading (ratio {per_reading / baseline:.1f}x)"
    )


BENCH_CURVES = ((81,), (89, 90, 91, 92, 93, 94))  # power, voltage and current per phase


@dataclass(frozen=True, slots=True)
class Store:
    """Where ``--store`` writes the curves: a throwaway server's superuser DSN and a spool directory."""

    dsn: str
    spool: Path


async def register_meters(dsn: str, descriptions: list[dict]) -> tuple[dict[tuple[int, int], int], int]:
    """A channel per concentrator and a meter per Pn: ``{(concentrator index, pn): meter id}``, and the
    server's postmaster pid (for its CPU)."""
    conn = await asyncpg.connect(dsn)
    try:
        ids: dict[tuple[int, int], int] = {}
        for index, description in enumerate(descriptions):
            channel = await conn.fetchval(
                "INSERT INTO channels (name, kind, address) VALUES ($1, 'tcp', $2) RETURNING id",
                f"conc-{index}",
                description["listen"],
            )
            for pn, meter in enumerate(description["meters"], start=1):
                ids[(index, pn)] = await conn.fetchval(
                    "INSERT INTO meters (name, protocol, address, model, channel_id)"
                    " VALUES ($1, 'dlt645-2007', $2, 'dlt645-generic', $3) RETURNING id",
                    f"conc-{index}/{pn}",
                    meter["address"],
                    channel,
                )
        data = Path(await conn.fetchval("SHOW data_directory"))
    finally:
        await conn.close()
    return ids, int((data / "postmaster.pid").read_text().split()[0])


def server_cpu_s(postmaster: int) -> float:
    """CPU seconds of a PostgreSQL server: the postmaster, its exited children and its live ones."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        pid, ppid = int(entry), int(fields[1])
        if pid == postmaster:
            ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        elif ppid == postmaster:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


async def curves(
    descriptions: list[dict], latency_ms: float, sim_pids: list[int], store: Store | None = None
) -> None:
    links = [link_of(d) for d in descriptions]
    await asyncio.gather(*(link.open() for link in links))
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=20)
    start = end - timedelta(days=1) + timedelta(minutes=15)
    captured: list[bytes] = []
    original = ConcentratorLink._received
    writer: ReadingWriter | None = None
    meter_ids: dict[tuple[int, int], int] = {}
    postmaster = 0
    if store is not None:
        meter_ids, postmaster = await register_meters(store.dsn, descriptions)
        writer = ReadingWriter(store.dsn, spool_dir=store.spool)
        await writer.start()

    def capture(self: ConcentratorLink, stream: object, raw: bytes) -> None:
        captured.append(raw)
        original(self, stream, raw)  # type: ignore[arg-type]

    async def one(index: int, link: ConcentratorLink, meters: list[dict]) -> int:
        count = 0
        for pn, meter in enumerate(meters, start=1):
            driver = ConcentratorMeterDriver(link, meter["address"], pn=pn, port=meter["port"])
            points = await driver.curve_points(start, end, BENCH_CURVES)
            count += sum(len(values) for values in points.values())
            if writer is not None:  # stored as the backfill stores a concentrator's curves
                meter_id = meter_ids[(index, pn)]
                await writer.submit(
                    Reading(meter_id, quantity, ts, value, "backfilled", "profile")
                    for ts, values in points.items()
                    for quantity, value in values.items()
                )
        return count

    ConcentratorLink._received = capture  # type: ignore[method-assign]
    server_before = server_cpu_s(postmaster) if postmaster else 0.0
    sims_before, cpu_before, wall_before = sims_cpu_s(sim_pids), cpu_s(), time.perf_counter()
    counts = await asyncio.gather(
        *(one(i, link, d["meters"]) for i, (link, d) in enumerate(zip(links, descriptions, strict=True)))
    )
    if writer is not None:
        await writer.close()
    wall = time.perf_counter() - wall_before
    cpu = cpu_s() - cpu_before
    sims_cpu = sims_cpu_s(sim_pids) - sims_before
    server_cpu = server_cpu_s(postmaster) - server_before if postmaster else 0.0
    ConcentratorLink._received = original  # type: ignore[method-assign]
    requests = sum(link.stats.requests for link in links)
    await asyncio.gather(*(link.close() for link in links))
    decode_started = time.process_time()
    for raw in captured:
        decode(raw)
    decode_cpu = time.process_time() - decode_started
    points = sum(counts)
    meters = sum(len(d["meters"]) for d in descriptions)
    stored = "" if writer is None else ", each stored through the ReadingWriter"
    print(
        f"(d) a day of 15-minute power, voltage and current curves: {len(links)} concentrators, "
        f"{meters} meters, {latency_ms:g} ms latency, {len(sim_pids)} simulator process(es){stored}"
    )
    print(f"    wall {wall:.2f} s ({requests} AFN 0D requests, {len(captured)} frames in); {points} points")
    print(f"    CPU meanwhile: this process {cpu:.2f} s, the simulator processes {sims_cpu:.2f} s")
    per_point = cpu / points * 1e6 if points else float("nan")
    baseline = decode_cpu / points * 1e6 if points else float("nan")
    print(
        f"    CPU {per_point:.1f} us per point in this process; decoding the same frames alone "
        f"{baseline:.1f} us per point (ratio {per_point / baseline:.1f}x)"
    )
    if writer is not None:
        assert writer.written + writer.duplicates == points and writer.spooled == 0, (writer.written, points)
        print(
            f"    stored {writer.written} rows; the database server's CPU {server_cpu:.2f} s ="
            f" {server_cpu / points * 1e6:.1f} us per stored point"
        )


LIVE_PLAN = ["power_kw", "voltage_a_v", "voltage_b_v", "voltage_c_v", "current_a_a", "current_b_a"]
LIVE_PLAN += ["current_c_a", "pf"]


async def live(description: dict, latency_ms: float) -> None:
    """One cycle of LIVE_PLAN for every meter: forwarded, then from AFN 0C F25."""
    meters = description["meters"]
    print(
        f"(e) one cycle of an instantaneous plan ({len(LIVE_PLAN)} quantities) for {len(meters)} meters"
        f" of one concentrator, {latency_ms:g} ms latency, {BAUD} baud 8E1 meters"
    )
    for label, with_pn in (("forwarded (AFN 10 F1)", False), ("AFN 0C F25", True)):
        link = link_of(description)
        drivers = [
            ConcentratorMeterDriver(link, m["address"], pn=pn if with_pn else None, port=m["port"])
            for pn, m in enumerate(meters, start=1)
        ]
        await link.values(Afn.CLASS1_DATA, [unit(0, 2)])  # connect and log in (AFN 0C F2: the clock)
        requests, frames_in = link.stats.requests, link.stats.frames_in
        started = time.perf_counter()
        for driver in drivers:
            values = await driver.read(LIVE_PLAN)
            assert {"power_kw", "voltage_a_v", "current_a_a", "pf"} <= set(values)
        wall = time.perf_counter() - started
        forwards = sum(driver.bus.forwards for driver in drivers)
        await link.close()
        print(
            f"    {label}: {link.stats.requests - requests} requests, {link.stats.frames_in - frames_in}"
            f" frames in, {forwards} forwarded DL/T 645 exchanges, wall {wall:.2f} s per cycle"
        )


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "headend.cli", "sim", *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        await asyncio.sleep(0.01)


async def storm_of(kind: str, count: int, processes: int) -> tuple[float, float, float]:
    """``count`` devices of ``kind`` dial in at once; (s first login -> all bound, s from the
    simulators' start, CPU us per login of this process)."""
    hub = DialinHub()
    if kind == "gdw1376":
        names = [f"{REGION}-{FIRST_TERMINAL + n}" for n in range(count)]
        spec = ListenerSpec(kind="gdw1376", max_connections=count + 100, max_per_address=count + 100)
    else:
        names = [f"DTU-{n:06d}" for n in range(1, count + 1)]
        spec = ListenerSpec(heartbeat=b"HB", max_connections=count + 100, max_per_address=count + 100)
    hub.inventory_loaded((kind, name) for name in names)
    listener = await Listener(spec, hub).start()
    first: list[float] = []
    hub.observer = lambda event, _inbound: (
        first.append(time.monotonic()) if event == "identified" and not first else None
    )
    per = -(-count // processes)
    cpu_before, started = cpu_s(), time.monotonic()
    target = f"127.0.0.1:{listener.port}"
    sims = []
    for index in range(0, count, per):
        n = str(min(per, count - index))
        if kind == "gdw1376":
            args = ["concentrator", "--connect", target, "--address", names[index], "--count", n]
            args += ["--meters", "1", "--history-days", "0", "--latency-ms", "0", "--heartbeat", "600"]
        else:
            args = ["dtu", "--connect", target, "--id", names[index], "--count", n, "--meters", "1"]
            args += ["--heartbeat", "600", "--history-days", "0", "--backoff", "1"]
        sims.append(await spawn(*args))
    try:
        await until(lambda: len(hub.live) == count, 600)
        bound = time.monotonic()
        cpu = cpu_s() - cpu_before
    finally:
        for sim in sims:
            if sim.returncode is None:
                sim.terminate()
        for sim in sims:
            await asyncio.wait_for(sim.wait(), 60)
        await listener.stop()
    return bound - first[0], bound - started, cpu * 1e6 / count


async def storm(count: int, processes: int) -> None:
    concentrators = await storm_of("gdw1376", count, processes)
    dtus = await storm_of("dtu", count, processes)
    print(f"(c) login storm: {count} concentrators from {processes} simulator processes dial in at once")
    for label, (spread, total, cpu) in (("1376.1 concentrators", concentrators), ("DTUs (baseline)", dtus)):
        print(
            f"    {label}: all bound {spread:.2f} s after the first login ({total:.2f} s after starting "
            f"the simulators), CPU {cpu:.0f} us per login"
        )
    print(f"    CPU per login, concentrator / DTU: {concentrators[2] / dtus[2]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--part", choices=["forward", "freeze", "curves", "live", "storm", "all"], default="all"
    )
    parser.add_argument("--concentrators", type=int, default=20)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--meters", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--reads", type=int, default=40)
    parser.add_argument("--history-days", type=int, default=1)
    parser.add_argument("--store", action="store_true", help="curves: also store every point (see (d))")
    args = parser.parse_args()
    if args.part in ("forward", "all"):
        procs, described = start_sims(1, 1, args.latency_ms, 8)
        try:
            asyncio.run(forwarded(described[0], args.reads, args.latency_ms))
        finally:
            stop_sims(procs)
    if args.part in ("freeze", "all"):
        started = time.perf_counter()
        procs, described = start_sims(
            args.concentrators, args.processes, args.latency_ms, args.meters, args.history_days
        )
        print(
            f"    ({args.concentrators} simulated concentrators x {args.meters} meters started in"
            f" {time.perf_counter() - started:.1f} s, {args.history_days} day(s) of load profile)"
        )
        try:
            asyncio.run(freeze(described, args.latency_ms, [proc.pid for proc in procs]))
        finally:
            stop_sims(procs)
    if args.part in ("curves", "all"):
        procs, described = start_sims(
            args.concentrators, args.processes, args.latency_ms, args.meters, max(1, args.history_days)
        )
        pids = [proc.pid for proc in procs]
        try:
            if args.store:

                async def stored(_args: argparse.Namespace, dsn: str, spool: Path) -> None:
                    await migrate(dsn)
                    await curves(described, args.latency_ms, pids, Store(dsn, spool))

                run_on_throwaway_server(stored, args)
            else:
                asyncio.run(curves(described, args.latency_ms, pids))
        finally:
            stop_sims(procs)
    if args.part in ("live", "all"):
        procs, described = start_sims(1, 1, args.latency_ms, args.meters)
        try:
            asyncio.run(live(described[0], args.latency_ms))
        finally:
            stop_sims(procs)
    if args.part in ("storm", "all"):
        asyncio.run(storm(args.concentrators, args.processes))


if __name__ == "__main__":
    main()
