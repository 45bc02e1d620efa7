"""The database (migration 0009's CHECK constraints) and the daemon refuse what the import refuses."""

from __future__ import annotations

from decimal import Decimal

import asyncpg
import pytest

from headend.engine.model import load_inventory
from headend.engine.vetting import vet

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
    ("group-nine", None, "gdw1376-group", "9", None, "1", "meters_group_number"),
    ("group-meter-address", None, "gdw1376-group", "000000000001", None, "1", "meters_group_number"),
    ("unknown-protocol", None, "dlt698", "000000000001", None, "1", "meters_protocol_check"),
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


async def test_daemon_leaves_out_what_the_import_would_refuse(pg_dsn: str) -> None:
    """Rows written around the import (old versions, by hand) are vetted again when the daemon loads them."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        ids = {}
        for name, url in (
            ("bus-a", "tcp://192.0.2.9:8899"),
            ("bus-a-again", "rtu-over-tcp://192.0.2.9:8899"),  # the same bus under a second name
            ("bad-url", "tcp://192.0.2.10:1?baud=0"),
            ("gw", "modbus-tcp://192.0.2.11:502"),
        ):
            ids[name] = await conn.fetchval(
                "INSERT INTO channels (name, kind, address, settings)"
                " VALUES ($1, 'tcp', 'x', $2::jsonb) RETURNING id",
                name,
                f'{{"url": "{url}"}}',
            )
        rows = [
            ("Good", "dlt645-2007", "000000000001", None, "dlt645-generic", ids["bus-a"]),
            ("Twice", "dlt645-2007", "000000000002", None, "dlt645-generic", ids["bus-a-again"]),
            ("NoModel", "dlt645-2007", "000000000003", None, "m", ids["bus-a"]),
            ("OnGateway", "dlt645-2007", "000000000004", None, "dlt645-generic", ids["gw"]),
            ("Unit7", "modbus", "7", 7, "eastron_sdm120", ids["gw"]),
        ]
        for row in rows:
            await conn.execute(
                "INSERT INTO meters (name, protocol, address, unit_id, model, channel_id)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                *row,
            )
        snapshot, problems = vet(await load_inventory(conn))
    finally:
        await conn.close()
    assert sorted(spec.name for spec in snapshot.channels.values()) == ["bus-a", "gw"]
    polled = sorted(m.name for meters in snapshot.meters_by_channel.values() for m in meters if m.name)
    assert polled == ["Good", "Unit7"]
    assert problems == [
        "channel bus-a-again not polled: same bus as channel bus-a (tcp://192.0.2.9:8899);"
        " its meters would be read and billed twice",
        "channel bad-url not polled: baud must be one of 300, 600, 1200, 2400, 4800, 9600, 14400, 19200,"
        " 38400, 57600, 115200, got 0 in 'tcp://192.0.2.10:1?baud=0'",
        "meter NoModel (000000000003) (id 3) not polled: unknown meter model 'm'",
        "meter OnGateway (000000000004) (id 4) not polled: protocol dlt645-2007 cannot run on a modbus-tcp://"
        " channel (use serial://, tcp://, dtu://, gdw1376://, gdw1376+tcp://)",
    ]
