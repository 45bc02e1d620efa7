"""Concentrator channels and their meters in the inventory: URLs, port and Pn validated at import, Pn kept."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from headend.inventory import InventoryError, import_inventory, read_inventory
from headend.transport.url import ChannelUrlError, parse_channel_url
from tests.support.cli import headend_in_process

CHANNELS = """
[[channels]]
name = "conc-1"
url = "gdw1376://0314-25394"
[[channels]]
name = "conc-2"
url = "gdw1376+tcp://10.0.0.5:9001?address=03146333&turnaround_ms=3000"
[[channels]]
name = "bus"
url = "tcp://10.0.0.6:8899"
"""


def meter(address: str, channel: str = "conc-1", **fields: object) -> str:
    lines = ["[[meters]]", f'channel = "{channel}"', 'protocol = "dlt645-2007"', f'address = "{address}"']
    lines.append('model = "dlt645-generic"')
    lines += [f"{key} = {value}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


def write(tmp_path: Path, *meters: str, name: str = "inv.toml") -> Path:
    path = tmp_path / name
    path.write_text(CHANNELS + "".join(meters))
    return path


async def pns(conn: asyncpg.Connection) -> dict[str, tuple[int, int]]:
    rows = await conn.fetch(
        "SELECT address, (settings->>'pn')::int AS pn, (settings->>'port')::int AS port FROM meters"
        " WHERE settings ? 'pn' ORDER BY address"
    )
    return {r["address"]: (r["pn"], r["port"]) for r in rows}


def test_concentrator_urls_parse_and_bad_ones_say_why() -> None:
    dial_in = parse_channel_url("gdw1376://03146332")
    assert (dial_in.terminal, dial_in.label, dial_in.turnaround_s) == (
        "0314-25394",
        "gdw1376://0314-25394",
        5.0,
    )
    fixed = parse_channel_url("gdw1376+tcp://10.0.0.5:9001?address=0314-25394&msa=3&baud=9600")
    assert (fixed.host, fixed.port, fixed.terminal, fixed.msa, fixed.baud) == (
        "10.0.0.5",
        9001,
        "0314-25394",
        3,
        9600,
    )
    for url, reason in (
        ("gdw1376+tcp://10.0.0.5:9001", "needs the concentrator address"),
        ("gdw1376://31-4", "want REGION-TERMINAL"),
        ("gdw1376://0314-70000", "out of range"),
        ("gdw1376+tcp://10.0.0.5?address=0314-1", "needs host:port"),
        ("gdw1376://0314-1?msa=0", "msa must be 1..127"),
        ("gdw1376://0314-1?bogus=1", "unknown channel options ['bogus']"),
    ):
        with pytest.raises(ChannelUrlError, match=reason.replace("[", r"\[").replace("]", r"\]")):
            parse_channel_url(url)


async def test_pn_is_assigned_once_and_kept_across_imports(pg_dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        first = [meter(f"00000000000{i}", port=1 + i % 2) for i in range(1, 4)]
        await import_inventory(
            conn, read_inventory(write(tmp_path, meter("000000000009", port=2, pn=2), *first))
        )
        assigned = await pns(conn)
        assert assigned == {
            "000000000001": (1, 2),
            "000000000002": (3, 1),
            "000000000003": (4, 2),
            "000000000009": (2, 2),
        }
        kind, address = await conn.fetchrow("SELECT kind, address FROM channels WHERE name = 'conc-2'")
        assert (kind, address) == ("gdw1376", "0314-25395")
        # the same meters in another order, without the explicit one, plus a new meter: nobody moves
        again = [*reversed(first), meter("000000000005", port=1)]
        await import_inventory(conn, read_inventory(write(tmp_path, *again, name="again.toml")))
        assert await pns(conn) == {**assigned, "000000000005": (5, 1)}
    finally:
        await conn.close()


async def test_port_and_pn_are_validated_at_import(pg_dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        with pytest.raises(InventoryError) as missing_port:
            await import_inventory(conn, read_inventory(write(tmp_path, meter("000000000001"))), "inv")
        assert (
            str(missing_port.value)
            == "inv: meters[0]: port: a meter behind a concentrator needs port (1..31)"
        )
        with pytest.raises(InventoryError) as on_a_bus:
            await import_inventory(
                conn, read_inventory(write(tmp_path, meter("000000000001", "bus", port=1))), "inv"
            )
        assert str(on_a_bus.value) == "inv: meters[0]: port: pn and port are only for concentrator channels"
        twice = write(tmp_path, meter("000000000001", port=1, pn=7), meter("000000000002", port=1, pn=7))
        with pytest.raises(InventoryError) as duplicate:
            await import_inventory(conn, read_inventory(twice), "inv")
        assert str(duplicate.value) == "inv: channel 'conc-1': pn 7 given to more than one meter"
        assert await conn.fetchval("SELECT count(*) FROM meters") == 0  # nothing half-imported
    finally:
        await conn.close()
    with pytest.raises(InventoryError, match=r"meters\[0\]: pn: Input should be less than or equal to 2040"):
        read_inventory(write(tmp_path, meter("000000000001", port=1, pn=3000)))
    with pytest.raises(InventoryError, match=r"meters\[0\]: port: Input should be less than or equal to 31"):
        read_inventory(write(tmp_path, meter("000000000001", port=40)))


def test_a_bad_concentrator_url_is_one_line_from_the_cli(tmp_path: Path, pg_dsn: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[channels]]\nname = "c"\nurl = "gdw1376+tcp://10.0.0.5:9001"\n')
    result = headend_in_process("inventory", "import", str(path), "--operator", "1", "--dsn", pg_dsn)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (
        f"{path}: channels[0]: url: gdw1376+tcp URL needs the concentrator address, e.g. "
        "gdw1376+tcp://10.0.0.5:9001?address=0314-25394, got 'gdw1376+tcp://10.0.0.5:9001'"
    )
