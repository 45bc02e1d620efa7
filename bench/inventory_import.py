"""Importing a utility's meters: ``--meters`` DL/T 645 meters on ``--channels`` channels from one TOML
file, imported in one transaction as ``headend inventory import`` does (``read_inventory`` then
``import_inventory``) on the desk login signed in as an admin, as docs/operations.md tells operators
to run it; then the same file again (every meter exists: the update path).

Baseline, measured in the same run on its own database: the same two imports by the schema owner,
whose writes the database's admin check (``inventory_guard``) lets through without an operator
look-up. The ratio is what the signed-in desk login pays for being checked.

Runs on a private embedded PostgreSQL server.
Usage: python bench/inventory_import.py [--meters 100000] [--channels 100]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from throwaway import run_on_throwaway_server

from headend.inventory import import_inventory, read_inventory
from headend.operators import authenticate, hash_password
from headend.store import operators as operator_store
from headend.store.demo_logins import DESK_LOGIN, ensure_console_logins
from headend.store.migrate import migrate

ADMIN = "9001"
PASSWORD = "bench-admin-password"


def _inventory_file(path: Path, meters: int, channels: int) -> Path:
    """``channels`` TCP channels, meter ``n`` on channel ``n % channels``."""
    blocks = [
        f'[[channels]]\nname = "bus-{c}"\nurl = "tcp://127.0.0.1:{9000 + c}"\n' for c in range(channels)
    ]
    blocks += [
        f'[[meters]]\nchannel = "bus-{n % channels}"\nprotocol = "dlt645-2007"\naddress = "{n + 1:012d}"\n'
        'model = "dlt645-generic"\n'
        for n in range(meters)
    ]
    path.write_text("\n".join(blocks))
    return path


async def _timed_imports(conn: asyncpg.Connection, path: Path, meters: int) -> tuple[float, float]:
    """Seconds for the first import and for the second (every meter updated)."""
    inventory = read_inventory(path)
    times = []
    for _ in range(2):
        started = time.perf_counter()
        result = await import_inventory(conn, inventory, path.name)
        times.append(time.perf_counter() - started)
        assert result.meters == meters, result
    return times[0], times[1]


async def run(args: argparse.Namespace, dsn: str, work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    admin = await asyncpg.connect(dsn)
    try:
        for name in ("import_desk", "import_owner"):
            await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    desk_db, owner_db = (
        urlunsplit(urlsplit(dsn)._replace(path=f"/{n}")) for n in ("import_desk", "import_owner")
    )
    path = _inventory_file(work / "meters.toml", args.meters, args.channels)
    timings = {}
    for db in (desk_db, owner_db):  # the checked login first: any warm-up cost falls on it
        await migrate(db)
        owner = await asyncpg.connect(db)
        try:
            await ensure_console_logins(owner)
            await operator_store.add_operator(owner, ADMIN, "bench admin", ["admin"], hash_password(PASSWORD))
            if db == owner_db:
                timings["owner"] = await _timed_imports(owner, path, args.meters)
                continue
        finally:
            await owner.close()
        desk = await asyncpg.connect(urlunsplit(urlsplit(db)._replace(netloc=f"{DESK_LOGIN}@")))
        try:
            await authenticate(desk, ADMIN, PASSWORD, "admin")
            timings["desk"] = await _timed_imports(desk, path, args.meters)
        finally:
            await desk.close()
    print(f"meters: {args.meters:,} on {args.channels} channels")
    for i, what in enumerate(("first import", "second import")):
        took, base = timings["desk"][i], timings["owner"][i]
        ratio = took / base
        print(f"{what}, desk login as admin: {took:6.1f} s  schema owner {base:6.1f} s  ratio {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--meters", type=int, default=100_000)
    parser.add_argument("--channels", type=int, default=100)
    run_on_throwaway_server(run, parser.parse_args())


if __name__ == "__main__":
    main()
