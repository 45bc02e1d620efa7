"""The database refuses what the import refuses, whoever writes (migration 0009's CHECK constraints)."""

from __future__ import annotations

from decimal import Decimal

import asyncpg
import pytest

INSERT = (
    "INSERT INTO meters (name, protocol, address, unit_id, model, channel_id, multiplier)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7)"
)

# (case id, name, protocol, address, unit id, multiplier, constraint that refuses it)
CASES = [
    ("unit-zero", None, "modbus", "0", 0, "1", "meters_unit_id_range"),
    ("unit-248", None, "modbus", "248", 248, "1", "meters_unit_id_range"),
    ("multiplier-nan", None, "dlt645-2007", "000000000001", None, "NaN", "meters_multiplier_range"),
    ("multiplier-zero", None, "dlt645-2007", "000000000001", None, "0", "meters_multiplier_range"),
    ("multiplier-huge", None, "dlt645-2007", "000000000001", None, "9999999", "meters_multiplier_range"),
    ("name-long", "x" * 201, "dlt645-2007", "000000000001", None, "1", "meters_name_length"),
    ("broadcast", None, "dlt645-2007", "999999999999", None, "1", "meters_not_broadcast"),
]


@pytest.mark.parametrize(
    ("name", "protocol", "address", "unit", "multiplier", "constraint"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
async def test_out_of_bounds_meter_rows_are_refused(
    pg_dsn: str,
    name: str | None,
    protocol: str,
    address: str,
    unit: int | None,
    multiplier: str,
    constraint: str,
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        channel = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('c', 'tcp', '127.0.0.1:1') RETURNING id"
        )
        with pytest.raises(asyncpg.CheckViolationError) as info:
            await conn.execute(
                INSERT, name, protocol, address, unit, "dlt645-generic", channel, Decimal(multiplier)
            )
        assert info.value.constraint_name == constraint
        assert await conn.fetchval("SELECT count(*) FROM meters") == 0
    finally:
        await conn.close()
