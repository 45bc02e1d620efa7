"""Every meter has a name every command accepts: the inventory's, or ``channel/address`` generated when
none is given; names are unique among installed meters and survive a re-import that gives none."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg

from tests.billing.test_cli import headend
from tests.support.operators import import_inventory_cli

TWO_BUSES = """
[[channels]]
name = "bus-a"
url = "tcp://127.0.0.1:9101"
[[channels]]
name = "bus-b"
url = "tcp://127.0.0.1:9102"
[[channels]]
name = "plant"
url = "modbus-tcp://127.0.0.1:9103"
[[channels]]
name = "plant-2"
url = "modbus-tcp://127.0.0.1:9104"
[[meters]]
channel = "bus-a"
protocol = "dlt645-2007"
address = "1"
model = "dlt645-generic"
[[meters]]
channel = "bus-b"
protocol = "dlt645-2007"
address = "1"
model = "dlt645-generic"
[[meters]]
channel = "plant"
protocol = "modbus"
unit_id = 7
model = "eastron_sdm120"
[[meters]]
channel = "plant-2"
protocol = "modbus"
unit_id = 7
model = "eastron_sdm120"
name = "pump"
"""


async def test_same_address_on_two_channels_gets_two_names_every_command_accepts(
    pg_dsn: str, tmp_path: Path
) -> None:
    path = tmp_path / "meters.toml"
    path.write_text(TWO_BUSES)
    done = import_inventory_cli(pg_dsn, path)
    assert done.returncode == 0, done.stderr
    listed = json.loads(headend(pg_dsn, "inventory", "list", "--json").stdout)
    assert sorted(m["name"] for m in listed) == [
        "bus-a/000000000001",
        "bus-b/000000000001",
        "plant/7",
        "pump",
    ]
    table = headend(pg_dsn, "inventory", "list").stdout
    assert "bus-b/000000000001" in table and "pump" in table

    shown = [
        json.loads(headend(pg_dsn, "meters", "show", n, "--json").stdout)
        for n in ("bus-b/000000000001", "pump")
    ]
    assert [(m["channel"], m["address"]) for m in shown] == [("bus-b", "000000000001"), ("plant-2", "7")]
    ambiguous = headend(pg_dsn, "meters", "show", "000000000001")
    assert ambiguous.returncode == 1 and ambiguous.stderr.strip() == (
        "error: '000000000001' matches 2 meters (bus-a/000000000001, bus-b/000000000001);"
        " give the meter's name"
    )

    # a re-import that gives no name keeps the one given before
    path.write_text(TWO_BUSES.replace('name = "pump"\n', ""))
    assert import_inventory_cli(pg_dsn, path).returncode == 0
    conn = await asyncpg.connect(pg_dsn)
    try:
        names = await conn.fetch("SELECT name FROM meters ORDER BY name")
        assert [r["name"] for r in names] == ["bus-a/000000000001", "bus-b/000000000001", "plant/7", "pump"]
    finally:
        await conn.close()


async def test_a_name_given_twice_is_refused_in_one_line(pg_dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "meters.toml"
    path.write_text(TWO_BUSES)
    assert import_inventory_cli(pg_dsn, path).returncode == 0
    twice = tmp_path / "twice.toml"
    twice.write_text(TWO_BUSES.replace('address = "1"\nmodel', 'address = "1"\nname = "twin"\nmodel'))
    done = import_inventory_cli(pg_dsn, twice)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"{twice}: meters[1]: name: 'twin' is also the name of meters[0]"
    ]
    taken = tmp_path / "taken.toml"
    taken.write_text(
        '[[meters]]\nchannel = "bus-a"\nprotocol = "dlt645-2007"\naddress = "1"\nname = "pump"\n'
        'model = "dlt645-generic"\n'
    )
    done = import_inventory_cli(pg_dsn, taken)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"{taken}: meters[0]: name: 'pump' is the name of the modbus meter 7 on channel 'plant-2'"
    ]
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM meters WHERE name IN ('twin', 'pump')") == 1
    finally:
        await conn.close()
