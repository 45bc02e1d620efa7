"""Console benchmark: p50 / p99 latency of the meter page, the overview and one meter-year readings
export under concurrent users, each beside a baseline measured in the same run.

Per storage mode (``--mode both`` runs TimescaleDB and then the native layout, each on a private
embedded PostgreSQL server): ``--meters`` meters on ``--channels`` channels with ``--days`` days of
15-minute energy readings up to now, loaded in SQL (generate_series, a statement per day, never row by
row); the first meter has a whole year. TimescaleDB chunks older than 30 days are compressed (the
policy's age, done now rather than waited for) and both aggregates are refreshed, as the daemon's
upkeep and TimescaleDB's policies leave them. Then ``headend web`` runs as a process of its own
(uvicorn, ``--workers`` processes, the desk and reporting logins) and ``--users`` clients (httpx, each
signed in with its own session) send ``--requests`` requests each, all at once:

- meter page ``/meters/NAME`` of a random meter (load curve, 14 daily bars, events, commands),
  against the static stylesheet under the same load (the HTTP and session floor);
- overview ``/`` (collection today per channel, meters not read today), against the same floor;
- the channels list ``/channels`` and a channel page ``/channels/NAME`` (100 meters at the defaults),
  three requests of one user each (no target in the issue);
- export ``/readings.csv`` of the first meter's year (35,040 rows), against the same rows fetched by
  a bare server-side cursor (the database floor), under ``--users`` concurrent exports and alone;
  then one user's export while the other users open meter pages, against the export alone.

For the pages it also prints the CPU each request cost the web server's processes and the database
server's (from /proc): unlike the latencies, not moved by what else runs on a shared machine.

Usage: python bench/console.py [--meters 10000] [--days 90] [--channels 100] [--users 20]
       [--requests 10] [--mode both|timescale|native] [--workers 1]
       [--no-export]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from headend.operators import hash_password
from headend.store import operators as operator_store
from headend.store.demo_logins import DESK_LOGIN, REPORT_LOGIN, ensure_console_logins
from headend.store.embedded import EmbeddedPostgres
from headend.store.maintenance import ensure_partitions, refresh_daily, storage_mode
from headend.store.migrate import migrate

PASSWORD = "bench-password-1"
STEP = timedelta(minutes=15)
SIGNIN_FIELD = re.compile(r'name="signin" value="([^"]+)"')


def seconds(started: float) -> float:
    return time.perf_counter() - started


def as_login(dsn: str, user: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"{user}@{host}", parts.path, parts.query, parts.fragment))


async def build(conn: asyncpg.Connection, args: argparse.Namespace, now: datetime) -> tuple[int, float]:
    """Inventory and readings; returns how many readings and the seconds the readings took."""
    await conn.execute(
        "INSERT INTO channels (name, kind, address) SELECT 'ch' || c, 'tcp', '127.0.0.1:' || (10000 + c)"
        " FROM generate_series(1, $1) c",
        args.channels,
    )
    # in order: m1 is meter 1, the one with a year (the export and the bare cursor read the same rows)
    await conn.execute(
        "INSERT INTO meters (name, protocol, address, model, channel_id)"
        " SELECT 'm' || n, 'dlt645-2007', lpad(n::text, 12, '0'), 'dlt645-generic', c.id"
        " FROM generate_series(1, $1) n JOIN channels c ON c.name = 'ch' || (1 + (n - 1) % $2) ORDER BY n",
        args.meters,
        args.channels,
    )
    energy = await conn.fetchval("INSERT INTO quantities (name) VALUES ('energy_import_kwh') RETURNING id")
    source = await conn.fetchval("INSERT INTO reading_sources (name) VALUES ('poll') RETURNING id")
    end = now.replace(minute=now.minute // 15 * 15, second=0, microsecond=0)
    start = end - timedelta(days=args.days)
    year = end - timedelta(days=365)
    await ensure_partitions(conn, year, end)
    started = time.perf_counter()
    # one statement per day of every meter (meter-major within the day); the register grows by a
    # meter-specific rate with a daily shape
    insert = (
        "INSERT INTO readings (meter_id, quantity_id, ts, value, quality, source_id)"
        " SELECT m.id, $1, t, m.id * 10 + extract(epoch FROM t - $4) / 3600 * (0.2 + (m.id % 9) * 0.1),"
        " 'actual', $2 FROM meters m CROSS JOIN generate_series($3::timestamptz, $5, $6) t"
        " WHERE m.id BETWEEN $7 AND $8 ORDER BY m.id, t"
    )
    day = year
    while day < end:
        upto = min(day + timedelta(days=1), end + STEP)
        last_meter = 1 if day < start else args.meters
        await conn.execute(insert, energy, source, day, year, upto - STEP, STEP, 1, last_meter)
        day = upto
    took = seconds(started)
    count = int(await conn.fetchval("SELECT count(*) FROM readings"))
    return count, took


async def prepare(conn: asyncpg.Connection, now: datetime) -> None:
    """Compress TimescaleDB chunks older than 30 days, refresh both aggregates, analyze."""
    if await storage_mode(conn) == "timescale":
        await conn.execute(
            "SELECT compress_chunk(c, true) FROM show_chunks('readings', older_than => $1::timestamptz) c",
            now - timedelta(days=30),
        )
    await refresh_daily(conn, now - timedelta(days=366), now.replace(minute=0, second=0, microsecond=0))
    await conn.execute("ANALYZE")


async def sign_in(url: str, operator: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=url, timeout=900)
    form = await client.get("/signin")
    match = SIGNIN_FIELD.search(form.text)
    if match is None:
        raise SystemExit(f"no sign-in form: {form.status_code}")
    done = await client.post("/signin", data={"operator": operator, "password": PASSWORD, "signin": match[1]})
    if done.status_code != 303:
        raise SystemExit(f"sign-in failed: {done.status_code} {done.text[:200]}")
    return client


async def load(clients: list[httpx.AsyncClient], paths: list[list[str]]) -> list[float]:
    """Every client sends its paths one after another, all clients at once; each request's seconds."""

    async def user(client: httpx.AsyncClient, mine: list[str]) -> list[float]:
        took = []
        for path in mine:
            started = time.perf_counter()
            response = await client.get(path)
            await response.aread()
            if response.status_code != 200:
                raise SystemExit(f"GET {path}: {response.status_code} {response.text[:200]}")
            took.append(seconds(started))
        return took

    found = await asyncio.gather(*(user(c, p) for c, p in zip(clients, paths, strict=True)))
    return [t for times in found for t in times]


def cpu_seconds(root: int) -> float:
    """CPU seconds (user and system) of process ``root``, of the children it reaped, and of its
    children now running: what the web server's or the database server's processes spent."""

    def stat(pid: int | str) -> list[str]:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()

    ticks = os.sysconf("SC_CLK_TCK")
    own = stat(root)
    total = sum(int(v) for v in own[11:15])  # utime, stime, cutime, cstime
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = stat(entry)
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == root:
                total += int(fields[11]) + int(fields[12])
    return total / ticks


async def measured(
    clients: list[httpx.AsyncClient], paths: list[list[str]], servers: tuple[int, int]
) -> tuple[list[float], tuple[float, float]]:
    """``load``, and the CPU milliseconds per request of the web server and the database server."""
    before = [cpu_seconds(pid) for pid in servers]
    took = await load(clients, paths)
    spent = [cpu_seconds(pid) - b for pid, b in zip(servers, before, strict=True)]
    return took, (spent[0] * 1000 / len(took), spent[1] * 1000 / len(took))


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(name: str, times: list[float], floor: list[float], floor_name: str, target: float) -> None:
    p50, p99 = p(times, 0.5) * 1000, p(times, 0.99) * 1000
    f50, f99 = p(floor, 0.5) * 1000, p(floor, 0.99) * 1000
    verdict = "meets" if p99 <= target * 1000 else "MISSES"
    print(
        f"  {name:28s} p50 {p50:8.1f} ms  p99 {p99:8.1f} ms  ({p50 / f50:5.1f}x / {p99 / f99:5.1f}x the"
        f" {floor_name}: p50 {f50:.1f} ms, p99 {f99:.1f} ms)  {verdict} p99 < {target * 1000:.0f} ms"
    )


async def bare_export(dsn: str, users: int, since: datetime, until: datetime) -> list[float]:
    """The meter-year's rows through bare server-side cursors, ``users`` at once (the database floor)."""

    async def one() -> float:
        conn = await asyncpg.connect(dsn)
        try:
            started = time.perf_counter()
            async with conn.transaction():
                async for _ in conn.cursor(
                    "SELECT ts, value, quality FROM readings WHERE meter_id = 1 AND ts >= $1 AND ts < $2"
                    " ORDER BY ts",
                    since,
                    until,
                    prefetch=1000,
                ):
                    pass
            return seconds(started)
        finally:
            await conn.close()

    return list(await asyncio.gather(*(one() for _ in range(users))))


async def exports(clients: list[httpx.AsyncClient], dsn: str, now: datetime, meters: list[list[str]]) -> None:
    """The first meter's year as CSV, every client at once, then one alone against a bare cursor, then
    one user's while the others open ``meters`` pages (a control room's day) against the export alone."""
    today = now.date()
    first = today - timedelta(days=364)
    export_path = f"/readings.csv?meter=m1&from={first}&to={today}"
    took = await load(clients, [[export_path] for _ in clients])
    since = datetime.combine(first, datetime.min.time(), UTC) - timedelta(hours=8)
    bare = await bare_export(as_login(dsn, REPORT_LOGIN), len(clients), since, now + timedelta(days=1))
    rows = len((await clients[0].get(export_path)).text.splitlines()) - 1
    report(f"export, one meter-year ({rows:,} rows)", took, bare, "bare cursor", 1.0)
    alone = await load(clients[:1], [[export_path] * 3])
    bare_alone = await bare_export(as_login(dsn, REPORT_LOGIN), 1, since, now + timedelta(days=1))
    report("the same export alone", alone, bare_alone, "bare cursor alone", 1.0)
    done = asyncio.Event()

    async def browse(client: httpx.AsyncClient, mine: list[str]) -> None:
        while not done.is_set():
            for path in mine:
                (await client.get(path)).raise_for_status()

    browsing = asyncio.gather(*(browse(c, m) for c, m in zip(clients[1:], meters[1:], strict=True)))
    mixed = await load(clients[:1], [[export_path] * 3])
    done.set()
    await browsing
    report(f"export, {len(clients) - 1} others browsing", mixed, alone, "export alone", 1.0)


async def run(args: argparse.Namespace, dsn: str, spool: Path, postmaster: Path) -> None:
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    now = datetime.now(UTC)
    try:
        mode = await storage_mode(conn)
        count, took = await build(conn, args, now)
        print(
            f"storage mode {mode}: {args.meters:,} meters, {args.channels} channels, {count:,} readings"
            f" ({args.days} days of 15-minute readings, a year for m1) loaded in {took:.0f} s"
            f" ({count / took:,.0f} rows/s)"
        )
        started = time.perf_counter()
        await prepare(conn, now)
        print(f"  compressed (TimescaleDB), aggregates refreshed, analyzed in {seconds(started):.0f} s")
        await ensure_console_logins(conn)
        await operator_store.add_operator(conn, "1", "bench viewer", ["viewer"], hash_password(PASSWORD))
    finally:
        await conn.close()
    spool.mkdir(parents=True, exist_ok=True)
    config = spool / "web.toml"
    config.write_text(
        f'[web]\ndesk_dsn = "{as_login(dsn, DESK_LOGIN)}"\nreport_dsn = "{as_login(dsn, REPORT_LOGIN)}"\n'
        f"pool_size = {args.users}\n"
    )
    port = random.randint(20000, 40000)
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "headend.cli",
        "web",
        "--listen",
        f"127.0.0.1:{port}",
        "--config",
        str(config),
        *(["--workers", str(args.workers)] if args.workers > 1 else []),
    ]
    log = spool / "web.log"
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/signin", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None:
                raise SystemExit(f"headend web exited: {log.read_text()[-1000:]}")
            await asyncio.sleep(0.1)
        clients = [await sign_in(url, "1") for _ in range(args.users)]
        rng = random.Random(1)
        n = args.requests

        def each(make: object) -> list[list[str]]:
            assert callable(make)
            return [[make() for _ in range(n)] for _ in clients]

        await load(clients, each(lambda: "/static/console.css"))  # warm up
        await load(clients, each(lambda: f"/meters/m{rng.randint(1, args.meters)}"))
        servers = (process.pid, int(postmaster.read_text().split()[0]))
        floor, floor_cpu = await measured(clients, each(lambda: "/static/console.css"), servers)
        pages = each(lambda: f"/meters/m{rng.randint(1, args.meters)}")
        meter, meter_cpu = await measured(clients, pages, servers)
        overview, overview_cpu = await measured(clients, each(lambda: "/"), servers)
        print(f"  {args.users} users at once, {n} requests each")
        report("meter page", meter, floor, "static page", 0.25)
        report("overview", overview, floor, "static page", 1.0)
        for name, (web, database) in (
            ("static page", floor_cpu),
            ("meter page", meter_cpu),
            ("overview", overview_cpu),
        ):
            print(f"  CPU per request, {name + ':':13s} web {web:6.1f} ms, database {database:6.1f} ms")
        # the channel pages, no target in the issue: one user, as an operator opens them
        listed, _ = await measured(clients[:1], [["/channels"] * 3], servers)
        one = [[f"/channels/ch{rng.randint(1, args.channels)}" for _ in range(3)]]
        channel, _ = await measured(clients[:1], one, servers)
        for name, times in (("channels list", listed), ("channel page", channel)):
            print(f"  {name}, one user: {', '.join(f'{t * 1000:.0f}' for t in times)} ms")
        if not args.no_export:
            await exports(clients, dsn, now, each(lambda: f"/meters/m{rng.randint(1, args.meters)}"))
        for client in clients:
            await client.aclose()
    except SystemExit:
        print(log.read_text()[-3000:])
        raise
    finally:
        process.terminate()
        process.wait(10)


def on_throwaway_server(args: argparse.Namespace) -> None:
    """``run`` against a fresh embedded server with room for the locks of queries over every chunk of
    a year (TimescaleDB's own tuning advice: ``max_locks_per_transaction`` well above the default)."""
    base = Path(tempfile.mkdtemp(prefix="headend-bench-"))
    base.chmod(0o755)  # the server drops root and must reach its directory
    server = EmbeddedPostgres(base / "pg", settings={"max_locks_per_transaction": str(args.max_locks)})
    try:
        dsn = server.start()
        asyncio.run(run(args, dsn, base / "spool", server.data_dir / "postmaster.pid"))
    finally:
        server.stop("fast")
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--mode", choices=("both", "timescale", "native"), default="both")
    parser.add_argument("--workers", type=int, default=1, help="headend web --workers")
    parser.add_argument("--no-export", action="store_true", help="measure the pages only")
    parser.add_argument("--max-locks", type=int, default=1024, help="the server's max_locks_per_transaction")
    args = parser.parse_args()
    with open("/proc/loadavg") as f:
        print(f"load average before: {' '.join(f.read().split()[:3])} ({os.cpu_count()} CPUs)")
    for mode in ("timescale", "native") if args.mode == "both" else (args.mode,):
        os.environ["HEADEND_EMBEDDED_TIMESCALEDB"] = "on" if mode == "timescale" else "off"
        on_throwaway_server(args)
    with open("/proc/loadavg") as f:
        print(f"load average after: {' '.join(f.read().split()[:3])}")


if __name__ == "__main__":
    main()
