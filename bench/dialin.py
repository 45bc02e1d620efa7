"""Dial-in benchmark: the listener under a connection storm, and polling through dial-in channels.

(a) ``storm``: D simulated DTUs (``headend sim dtu --count``, spread over P simulator processes)
    dial in at once to one listener in this process. Figures: time from the first accepted
    connection until all D are bound (and from the simulators' start), CPU of this process per
    connection (accept + registration + binding), resident memory per idle bound connection.
(b) ``poll``: B simulated DL/T 645 buses of K meters each, every bus reachable both as an outbound
    ``tcp://`` serial server and through a simulated DTU dialling in (the same meters: one bus, two
    ways in; simulators in another process). Every meter is read R rounds through each kind of
    channel, alternating kinds round by round. Figure: CPU microseconds of this process per reading
    through ``dtu://`` channels and the ratio to ``tcp://`` channels in the same run (target <= 1.1).

Usage: python bench/dialin.py [--part storm|poll|all] [--dtus 2000] [--procs 4] [--buses 20]
       [--meters 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import statistics
import sys
import time
from typing import Any

from headend.drivers import make_driver
from headend.transport import Channel, DialinHub, open_channel
from headend.transport.listener import Listener, ListenerSpec
from simulators import BusSpec, SimBus
from simulators.dtu import DtuSpec, SimDtu

ENERGY = "energy_import_kwh"
HEARTBEAT = b"HB"


def cpu_s() -> float:
    """User + kernel CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes() -> int:
    """Resident memory of this process now (not the peak)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )


async def stop_all(processes: list[asyncio.subprocess.Process]) -> None:
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        await asyncio.wait_for(process.wait(), 60)


async def until(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        await asyncio.sleep(0.01)


async def storm(dtus: int, procs: int) -> None:
    hub = DialinHub()
    ids = [f"DTU-{n:06d}" for n in range(1, dtus + 1)]
    hub.inventory_loaded(("dtu", i) for i in ids)
    listener = await Listener(
        ListenerSpec(heartbeat=HEARTBEAT, max_connections=dtus + 100, max_per_address=dtus + 100), hub
    ).start()
    first_accept: list[float] = []
    hub.observer = lambda event, _inbound: (
        first_accept.append(time.monotonic()) if event == "identified" and not first_accept else None
    )
    rss_before, cpu_before = rss_bytes(), cpu_s()
    per_proc = -(-dtus // procs)
    started = time.monotonic()
    sims = [
        await spawn(
            "-m",
            "headend.cli",
            "sim",
            "dtu",
            "--connect",
            f"127.0.0.1:{listener.port}",
            "--id",
            ids[start],
            "--count",
            str(min(per_proc, dtus - start)),
            "--meters",
            "1",
            "--heartbeat",
            "60",
            "--history-days",
            "0",
            "--backoff",
            "1",
            "--json",
        )
        for start in range(0, dtus, per_proc)
    ]
    try:
        await until(lambda: len(hub.live) == dtus, 600)
        bound_at = time.monotonic()
        cpu_storm, rss_bound = cpu_s() - cpu_before, rss_bytes()
        print(f"(a) connection storm: {dtus} DTUs from {len(sims)} simulator processes")
        print(
            f"    all bound {bound_at - first_accept[0]:.2f} s after the first connection "
            f"({bound_at - started:.2f} s after starting the simulators)"
        )
        print(
            f"    CPU of the listener process: {cpu_storm * 1e6 / dtus:.0f} us per connection "
            f"({cpu_storm:.2f} s in all)"
        )
        print(
            f"    memory: {(rss_bound - rss_before) / dtus / 1024:.1f} KiB per idle bound connection "
            f"(RSS {rss_before / 2**20:.0f} -> {rss_bound / 2**20:.0f} MiB)"
        )
        counts = {k: v for k, v in sorted(hub.counts.items()) if v}
        print(f"    listener counts: {counts}")
    finally:
        await stop_all(sims)
        await listener.stop()


async def serve_buses(host: str, port: int, buses: int, meters: int) -> None:
    """``--role sims``: B buses, each on a TCP serial server and behind a DTU dialling ``host:port``."""
    running: list[SimBus] = []
    dtus: list[SimDtu] = []
    described = []
    for n in range(buses):
        bus = await SimBus(BusSpec(meters=meters, seed=100 + n, transport="tcp", history_days=0)).start()
        identity = f"BENCH-{n:04d}"
        dtu = await SimDtu(DtuSpec(identity, host, port, heartbeat=HEARTBEAT, heartbeat_s=60.0), bus).start()
        running.append(bus)
        dtus.append(dtu)
        described.append({"identity": identity, "url": bus.url, "meters": [m.address for m in bus.meters]})
    print(json.dumps(described), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for dtu in dtus:
        await dtu.stop()
    for bus in running:
        await bus.stop()


async def read_round(channels: list[tuple[Channel, list[Any]]]) -> int:
    """Every meter once, the buses in parallel; returns the readings."""

    async def bus(drivers: list[Any]) -> int:
        for driver in drivers:
            await driver.read([ENERGY])
        return len(drivers)

    return sum(await asyncio.gather(*(bus(drivers) for _, drivers in channels)))


async def poll(buses: int, meters: int, rounds: int) -> None:
    hub = DialinHub()
    hub.inventory_loaded([("dtu", f"BENCH-{n:04d}") for n in range(buses)])
    listener = await Listener(ListenerSpec(heartbeat=HEARTBEAT), hub).start()
    sims = await spawn(
        __file__,
        "--role",
        "sims",
        "--connect",
        f"127.0.0.1:{listener.port}",
        "--buses",
        str(buses),
        "--meters",
        str(meters),
    )
    try:
        assert sims.stdout is not None
        described = json.loads(await asyncio.wait_for(sims.stdout.readline(), 300))
        await until(lambda: len(hub.live) == buses, 120)
        kinds: dict[str, list[tuple[Channel, list[Any]]]] = {"tcp": [], "dtu": []}
        for bus in described:
            for kind, url in (("tcp", bus["url"]), ("dtu", f"dtu://{bus['identity']}")):
                channel = open_channel(url, hub)
                assert isinstance(channel, Channel)
                drivers = [make_driver("dlt645-2007", channel, a, None, None) for a in bus["meters"]]
                kinds[kind].append((channel, drivers))
        for kind in kinds:  # warm up: connect, cache requests
            await read_round(kinds[kind])
        per_round: dict[str, list[float]] = {"tcp": [], "dtu": []}  # CPU us per reading, each round
        readings = {"tcp": 0, "dtu": 0}
        wall = {"tcp": 0.0, "dtu": 0.0}
        for round_no in range(rounds):
            order = ("tcp", "dtu") if round_no % 2 == 0 else ("dtu", "tcp")
            for kind in order:
                before, started = cpu_s(), time.monotonic()
                done = await read_round(kinds[kind])
                per_round[kind].append((cpu_s() - before) * 1e6 / done)
                readings[kind] += done
                wall[kind] += time.monotonic() - started
        per = {kind: statistics.median(values) for kind, values in per_round.items()}
        print(f"(b) polling {buses} buses x {meters} meters, {rounds} rounds per kind, same meters both ways")
        for kind in ("tcp", "dtu"):
            rate = readings[kind] / wall[kind]
            spread = ", ".join(f"{v:.0f}" for v in per_round[kind])
            print(f"    {kind}://: {per[kind]:.0f} us CPU per reading, {rate:.0f} readings/s")
            print(f"      per round: {spread}")
        print(
            f"    ratio dtu:// / tcp:// (baseline, same run): {per['dtu'] / per['tcp']:.2f}x (target <= 1.1x)"
        )
        for channels in kinds.values():
            for channel, _ in channels:
                await channel.close()
    finally:
        await stop_all([sims])
        await listener.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["storm", "poll", "all"], default="all")
    parser.add_argument("--dtus", type=int, default=2000)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--buses", type=int, default=20)
    parser.add_argument("--meters", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--role", choices=["bench", "sims"], default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--connect", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "sims":
        host, _, port = args.connect.rpartition(":")
        asyncio.run(serve_buses(host, int(port), args.buses, args.meters))
        return
    if args.part in ("storm", "all"):
        asyncio.run(storm(args.dtus, args.procs))
    if args.part in ("poll", "all"):
        asyncio.run(poll(args.buses, args.meters, args.rounds))


if __name__ == "__main__":
    main()
