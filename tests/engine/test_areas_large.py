"""A utility's inventory of transformer areas in one import: 100 areas of 100 customer meters each
(10,000 memberships in one transaction, more than PostgreSQL's shared lock table holds, which a lock
per meter used to exhaust) through ``headend inventory import`` under the desk login, then a second
import that moves a tenth of them to the next area on a later date. The database still refuses a meter
in two areas at once. The 100,000-membership figure is bench/areas_import.py's."""

from __future__ import annotations

import time
from pathlib import Path

import asyncpg
import pytest

from tests.support.operators import import_inventory_cli

AREAS, PER_AREA, MOVED = 100, 100, 10
CUSTOMERS = AREAS * PER_AREA


def _areas(path: Path, effective: str, moved: int = 0) -> Path:
    """The areas, customer k of area a being meter ``m{a*PER_AREA+k}``; the first ``moved`` customers of
    each area listed in the next area instead."""
    lines = []
    for a in range(AREAS):
        members = [f"m{a * PER_AREA + k}" for k in range(moved, PER_AREA)]
        members += [f"m{(a - 1) % AREAS * PER_AREA + k}" for k in range(moved)]
        quoted = ", ".join(f'"{m}"' for m in members)
        lines.append(
            f'[[areas]]\nname = "T-{a:04d}"\nsupply_meter = "m{CUSTOMERS + a}"\neffective = {effective}\n'
            f"members = [{quoted}]\n"
        )
    path.write_text("\n".join(lines))
    return path


async def test_ten_thousand_memberships_import_in_one_transaction(pg_dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(pg_dsn)  # the meters seeded by the schema owner, the areas imported
    try:
        await conn.execute("INSERT INTO channels (name, kind, address) VALUES ('bus', 'tcp', '127.0.0.1:9')")
        await conn.execute(
            "INSERT INTO meters (name, protocol, address, model, channel_id)"
            " SELECT 'm' || n, 'dlt645-2007', lpad((n + 1)::text, 12, '0'), 'dlt645-generic', c.id"
            " FROM generate_series(0, $1 - 1) n, channels c",
            CUSTOMERS + AREAS,
        )
        started = time.monotonic()
        done = import_inventory_cli(pg_dsn, _areas(tmp_path / "one.toml", "2026-01-01"), 600)
        took = time.monotonic() - started
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"({CUSTOMERS} membership change(s))" in done.stdout
        done = import_inventory_cli(pg_dsn, _areas(tmp_path / "two.toml", "2026-02-01", MOVED), 600)
        assert done.returncode == 0, done.stderr[-2000:]
        # each move counts as a leaver and a joiner, but area 0's joiners from the last area had already
        # been closed when the last area's leavers were looked for
        assert f"({2 * AREAS * MOVED - MOVED} membership change(s))" in done.stdout
        print(f"{CUSTOMERS:,} memberships imported in {took:.1f} s")
        counts = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE valid_to IS NULL) AS open,"
            " count(*) FILTER (WHERE valid_to = '2026-02-01') AS closed FROM area_members"
        )
        assert (counts["open"], counts["closed"]) == (CUSTOMERS, AREAS * MOVED)
        moved = await conn.fetch(
            "SELECT a.name, am.valid_from::text, am.valid_to::text FROM area_members am"
            " JOIN areas a ON a.id = am.area_id JOIN meters m ON m.id = am.meter_id"
            " WHERE m.name = 'm0' ORDER BY am.valid_from"
        )
        assert [tuple(r) for r in moved] == [
            ("T-0000", "2026-01-01", "2026-02-01"),
            ("T-0001", "2026-02-01", None),
        ]
        with pytest.raises(asyncpg.ExclusionViolationError, match="two areas at once"):
            await conn.execute(
                "INSERT INTO area_members (meter_id, area_id, valid_from)"
                " SELECT m.id, (SELECT id FROM areas WHERE name = 'T-0002'), '2026-03-01'"
                " FROM meters m WHERE m.name = 'm5'"
            )
    finally:
        await conn.close()
