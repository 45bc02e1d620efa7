"""Importing a utility's transformer areas: ``--areas`` areas of ``--per-area`` customer meters each
(default 1,000 × 100: 100,000 memberships), read from one TOML file and imported in one transaction
as ``headend inventory import`` does (``read_inventory`` then ``import_inventory``; the command adds
the operator's sign-in and one audit row), then a second file, dated a month later, that moves the
first tenth of every area's customers to the next area.

Baseline, measured in the same run on its own database: the same two imports at a tenth of the
size. The ratio compares the full size with ten times the baseline (1.0: linear; above 1: each
membership costs more in a larger inventory).

Runs on a private embedded PostgreSQL server.
Usage: python bench/areas_import.py [--areas 1000] [--per-area 100]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from throwaway import run_on_throwaway_server

from headend.inventory import import_inventory, read_inventory
from headend.store.migrate import migrate


def _areas_file(path: Path, areas: int, per_area: int, effective: str, moved: int) -> Path:
    """Area ``a`` supplied by meter ``s{a}``, its customers ``c{a*per_area+k}``; the first ``moved``
    customers of each area listed in the next area instead."""
    blocks = []
    for a in range(areas):
        own = [a * per_area + k for k in range(moved, per_area)]
        arrived = [(a - 1) % areas * per_area + k for k in range(moved)]
        members = ", ".join(f'"c{n}"' for n in own + arrived)
        blocks.append(
            f'[[areas]]\nname = "T-{a:05d}"\nsupply_meter = "s{a}"\neffective = {effective}\n'
            f"members = [{members}]\n"
        )
    path.write_text("\n".join(blocks))
    return path


async def _timed_imports(dsn: str, areas: int, per_area: int, work: Path) -> tuple[float, float, int]:
    """Seconds for the first import and for the move, and the memberships open after both."""
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO channels (name, kind, address) VALUES ('bus', 'tcp', '127.0.0.1:9')")
        await conn.execute(
            "INSERT INTO meters (name, protocol, address, model, channel_id)"
            " SELECT CASE WHEN n < $2 THEN 'c' || n ELSE 's' || (n - $2) END, 'dlt645-2007',"
            " lpad((n + 1)::text, 12, '0'), 'dlt645-generic', c.id"
            " FROM generate_series(0, $1 - 1) n, channels c",
            areas * (per_area + 1),
            areas * per_area,
        )
        times = []
        for name, effective, moved in (("one", "2026-01-01", 0), ("two", "2026-02-01", per_area // 10)):
            path = _areas_file(work / f"{name}.toml", areas, per_area, effective, moved)
            started = time.perf_counter()
            result = await import_inventory(conn, read_inventory(path), path.name)
            times.append(time.perf_counter() - started)
            assert result.areas == areas, result
        open_members = await conn.fetchval("SELECT count(*) FROM area_members WHERE valid_to IS NULL")
        return times[0], times[1], open_members
    finally:
        await conn.close()


async def run(args: argparse.Namespace, dsn: str, work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    admin = await asyncpg.connect(dsn)
    try:
        for name in ("areas_full", "areas_baseline"):
            await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    full_dsn, base_dsn = (
        urlunsplit(urlsplit(dsn)._replace(path=f"/{n}")) for n in ("areas_full", "areas_baseline")
    )
    small = max(1, args.areas // 10)
    base_first, base_move, base_open = await _timed_imports(base_dsn, small, args.per_area, work)
    first, move, opened = await _timed_imports(full_dsn, args.areas, args.per_area, work)
    assert opened == args.areas * args.per_area and base_open == small * args.per_area
    scale = args.areas / small
    print(f"memberships: {opened:,} (baseline {base_open:,}, x{scale:g})")
    for what, took, base in (("first import", first, base_first), ("move a tenth", move, base_move)):
        print(f"{what}: {took:7.1f} s  baseline {base:6.2f} s  ratio to linear {took / (scale * base):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--areas", type=int, default=1_000)
    parser.add_argument("--per-area", type=int, default=100)
    run_on_throwaway_server(run, parser.parse_args())


if __name__ == "__main__":
    main()
