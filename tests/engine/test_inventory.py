"""Inventory import (TOML, CSV) and listing against the real schema."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest

from headend.inventory import InventoryError, import_inventory, list_inventory, read_inventory
from tests.support.cli import headend
from tests.support.operators import INVENTORY_ADMIN, import_inventory_cli

REPO = Path(__file__).resolve().parents[2]


async def test_toml_example_imports_and_lists(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        result = await import_inventory(conn, read_inventory(REPO / "config" / "inventory.example.toml"))
        assert (result.channels, result.meters) == (3, 4)
        rows = await list_inventory(conn)
        assert [(r["channel"], r["protocol"], r["address"]) for r in rows] == [
            ("feeder-12-dtu", "dlt645-1997", "000000001234"),
            ("plant-gateway", "modbus", "7"),
            ("substation-3-bus-a", "dlt645-2007", "000012345678"),
            ("substation-3-bus-a", "dlt645-2007", "000012345679"),
        ]
        modbus = await conn.fetchrow("SELECT unit_id, address FROM meters WHERE protocol = 'modbus'")
        assert (modbus["unit_id"], modbus["address"]) == (7, "7")
        channel = await conn.fetchrow(
            "SELECT kind, address, settings->>'url' AS url FROM channels WHERE name = 'feeder-12-dtu'"
        )
        assert tuple(channel) == ("tcp", "192.0.2.10:8899", "tcp://192.0.2.10:8899")
        clinic = await conn.fetchrow("SELECT protected, protected_reason FROM meters WHERE name = 'Clinic'")
        assert tuple(clinic) == (True, "medical equipment")
    finally:
        await conn.close()


async def test_reimport_updates_in_place_and_csv_merges(pg_dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await import_inventory(conn, read_inventory(REPO / "config" / "inventory.example.toml"))
        before = await conn.fetchval("SELECT max(updated_at) FROM meters")
        csv_path = tmp_path / "more.csv"
        csv_path.write_text(
            "channel,channel_url,protocol,address,model,name,has_relay\n"
            "substation-3-bus-a,serial:///dev/ttyUSB0?baud=2400&parity=E,dlt645-2007,12345678,dlt645-generic,Renamed,no\n"
            "new-bus,tcp://127.0.0.1:9000,dlt645-2007,1,dlt645-generic,,yes\n"
        )
        result = await import_inventory(conn, read_inventory(csv_path))
        assert (result.channels, result.meters) == (2, 2)
        assert await conn.fetchval("SELECT count(*) FROM meters") == 5
        row = await conn.fetchrow(
            "SELECT name, model, has_relay, updated_at FROM meters WHERE address = '000012345678'"
        )
        assert (row["name"], row["model"], row["has_relay"]) == ("Renamed", "dlt645-generic", False)
        assert row["updated_at"] > before
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[[channels]]\nname = "a"\nurl = "http://x:1"\n', "channels[0]: url: unsupported channel scheme"),
        ('[[channels]]\nname = "a"\nurl = "tcp://host"\n', "channels[0]: url: tcp URL needs host and port"),
        (
            '[[meters]]\nchannel = "a"\nprotocol = "dlt645-2007"\naddress = "12AB"\n'
            'model = "dlt645-generic"\n',
            "meters[0]: (row): DL/T 645 address must be up to 12 decimal digits",
        ),
        (
            '[[meters]]\nchannel = "a"\nprotocol = "modbus"\nmodel = "eastron_sdm120"\n',
            "meters[0]: (row): a Modbus meter needs unit_id",
        ),
        (
            '[[meters]]\nchannel = "a"\nprotocol = "iec62056"\naddress = "1"\nmodel = "dlt645-generic"\n',
            "meters[0]: protocol:",
        ),
        (
            '[[meters]]\nchannel = "a"\nprotocol = "modbus"\nunit_id = 1\nmodel = "eastron_sdm120"\n'
            "baud = 2400\n",
            "meters[0]: baud: unknown field",
        ),
        (
            '[[meters]]\nchannel = "a"\nprotocol = "modbus"\nunit_id = 1\nmodel = "eastron_sdm120"\n'
            '[[meters]]\nchannel = "a"\nprotocol = "modbus"\nunit_id = 1\nmodel = "eastron_sdm120"\n',
            "meters[1]: address: duplicate of meters[0]",
        ),
    ],
)
def test_bad_files_are_refused_with_location(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "inv.toml"
    path.write_text(body)
    with pytest.raises(InventoryError) as info:
        read_inventory(path)
    assert f"{path}: {expected}" in str(info.value)


def test_csv_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "inv.csv"
    path.write_text(
        "channel,channel_url,protocol,address,model\nb,tcp://127.0.0.1:1,dlt645-2007,1,dlt645-generic\n"
        "b,tcp://127.0.0.1:1,modbus,,eastron_sdm120\n"
    )
    with pytest.raises(InventoryError, match=r"inv.csv: line 3: \(row\): a Modbus meter needs unit_id"):
        read_inventory(path)


async def test_unknown_channel_or_account_rolls_back(pg_dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "inv.toml"
    path.write_text(
        '[[channels]]\nname = "a"\nurl = "tcp://127.0.0.1:1"\n'
        '[[meters]]\nchannel = "zz"\nprotocol = "modbus"\nunit_id = 1\nmodel = "eastron_sdm120"\n'
        '[[meters]]\nchannel = "a"\nprotocol = "modbus"\nunit_id = 2\nmodel = "eastron_sdm120"\n'
        'account = "A-9"\n'
    )
    conn = await asyncpg.connect(pg_dsn)
    try:
        with pytest.raises(InventoryError) as info:
            await import_inventory(conn, read_inventory(path), str(path))
        assert "meters[0]: channel: no channel named 'zz'" in str(info.value)
        assert "meters[1]: account: no account numbered 'A-9'" in str(info.value)
        assert await conn.fetchval("SELECT count(*) FROM channels") == 0
    finally:
        await conn.close()


def test_cli_import_and_list(pg_dsn: str, tmp_path: Path) -> None:
    out = import_inventory_cli(pg_dsn, REPO / "config" / "inventory.example.csv")
    assert out.returncode == 0, out.stderr
    assert "imported 2 channel(s) and 3 meter(s)" in out.stdout
    listed = headend("inventory", "list", "--dsn", pg_dsn, "--json")
    meters = json.loads(listed.stdout)
    assert [(m["channel"], m["address"], m["protected"]) for m in meters] == [
        ("plant-gateway", "7", False),
        ("substation-3-bus-a", "000012345678", False),
        ("substation-3-bus-a", "000012345679", True),
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "channel,channel_url,protocol,address,model\nx,tcp://127.0.0.1:1,dlt645-2007,,dlt645-generic\n"
    )
    refused = headend("inventory", "import", str(bad), "--operator", INVENTORY_ADMIN, "--dsn", pg_dsn)
    assert refused.returncode == 2
    assert f"{bad}: line 2: (row): DL/T 645 address must be up to 12 decimal digits" in refused.stderr


async def test_a_reimport_mixing_stated_and_unstated_names_and_dates_updates_each_meter(
    pg_dsn: str, tmp_path: Path
) -> None:
    """The import upserts its meters in one statement per kind of row (migration 0087 checks the admin
    once per statement): a name or installation date the file states replaces the stored one, one it
    leaves out keeps it, other columns follow the file, a removed meter comes back, under the desk
    login."""

    def meter(address: str, extra: str = "") -> str:
        return (
            f'[[meters]]\nchannel = "bus"\nprotocol = "dlt645-2007"\naddress = "{address}"\n'
            f'model = "dlt645-generic"\n{extra}'
        )

    channel = '[[channels]]\nname = "bus"\nurl = "tcp://127.0.0.1:9"\n'
    first = tmp_path / "first.toml"
    first.write_text(
        "\n".join(
            [
                channel,
                meter("1", 'name = "kept"\ninstalled_at = 2026-01-01T00:00:00+08:00\n'),
                meter("2", 'name = "renamed-later"\ninstalled_at = 2026-02-01T00:00:00+08:00\n'),
                meter("3", 'meter_number = "000000000333"\nmultiplier = 2\n'),
                meter("4"),
            ]
        )
    )
    assert import_inventory_cli(pg_dsn, first).returncode == 0
    conn = await asyncpg.connect(pg_dsn)
    try:
        before = {
            r["address"]: r
            for r in await conn.fetch("SELECT address, name, installed_at, meter_number FROM meters")
        }
        await conn.execute("UPDATE meters SET removed_at = now() WHERE address = '000000000004'")
        second = tmp_path / "second.toml"
        second.write_text(
            "\n".join(
                [
                    channel,
                    meter("1", "multiplier = 5\n"),
                    meter("2", 'name = "new-name"\n'),
                    meter("3", "installed_at = 2026-03-01T00:00:00+08:00\nhas_relay = true\n"),
                    meter("4", 'name = "back"\n'),
                    meter("5"),
                ]
            )
        )
        assert import_inventory_cli(pg_dsn, second).returncode == 0
        after = {
            r["address"][-1]: (
                r["name"], r["installed_at"] == before.get(r["address"], {}).get("installed_at"),
                r["meter_number"], float(r["multiplier"]), r["has_relay"], r["removed_at"] is None,
            )
            for r in await conn.fetch(
                "SELECT address, name, installed_at, meter_number, multiplier, has_relay, removed_at"
                " FROM meters"
            )
        }  # fmt: skip
        installed_3 = await conn.fetchval("SELECT installed_at FROM meters WHERE address = '000000000003'")
    finally:
        await conn.close()
    assert after == {
        "1": ("kept", True, None, 5.0, False, True),
        "2": ("new-name", True, None, 1.0, False, True),
        "3": ("bus/000000000003", False, "000000000333", 1.0, True, True),
        "4": ("back", True, None, 1.0, False, True),
        "5": ("bus/000000000005", False, None, 1.0, False, True),
    }
    assert installed_3.isoformat() == "2026-02-28T16:00:00+00:00"
