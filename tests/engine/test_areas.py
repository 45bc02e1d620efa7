"""Transformer areas: import through ``headend inventory import``, moves on effective dates, the
database's refusals, and ``headend inventory areas`` exporting TOML that imports back unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest

from headend.operators import authenticate
from tests.support import cli
from tests.support.operators import PASSWORD, add_operators, import_inventory_cli, operator_env

METERS = """
[[channels]]
name = "bus-a"
url = "tcp://127.0.0.1:9"

{meters}
"""


def _meters(*names: str) -> str:
    return "\n".join(
        f'[[meters]]\nchannel = "bus-a"\nprotocol = "dlt645-2007"\naddress = "{i + 1}"\n'
        f'model = "dlt645-generic"\nname = "{name}"\n'
        for i, name in enumerate(names)
    )


def _area(name: str, supply: str, members: list[str], effective: str, **extra: object) -> str:
    lines = [f'[[areas]]\nname = "{name}"\nsupply_meter = "{supply}"\neffective = {effective}']
    lines += [f"{key} = {value}" for key, value in extra.items()]
    lines.append(f"members = {json.dumps(members)}")
    return "\n".join(lines) + "\n"


def _headend(*args: str) -> cli.CliResult:
    return cli.headend(*args, env=operator_env())


async def _memberships(dsn: str) -> list[tuple[str, str, str, str | None]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT m.name AS meter, a.name AS area, am.valid_from, am.valid_to FROM area_members am"
            " JOIN meters m ON m.id = am.meter_id JOIN areas a ON a.id = am.area_id"
            " ORDER BY m.name, am.valid_from"
        )
        return [
            (
                r["meter"],
                r["area"],
                str(r["valid_from"]),
                None if r["valid_to"] is None else str(r["valid_to"]),
            )
            for r in rows
        ]
    finally:
        await conn.close()


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


async def test_import_moves_a_meter_on_its_effective_date(pg_dsn: str, tmp_path: Path) -> None:
    first = (
        METERS.format(meters=_meters("s1", "s2", "c1", "c2", "c3"))
        + _area("T1", "s1", ["c1", "c2"], "2026-11-01", ct_ratio=40, pt_ratio=1)
        + _area("T2", "s2", ["c3"], "2026-11-01")
    )
    done = import_inventory_cli(pg_dsn, _write(tmp_path, "first.toml", first))
    assert done.returncode == 0, done.stderr
    assert "2 area(s) (3 membership change(s))" in done.stdout
    # c2 moves from T1 to T2 on 2026-11-20; re-listing c1 in T1 changes nothing
    second = _area("T1", "s1", ["c1"], "2026-11-20", ct_ratio=40) + _area(
        "T2", "s2", ["c3", "c2"], "2026-11-20"
    )
    done = import_inventory_cli(pg_dsn, _write(tmp_path, "second.toml", second))
    assert done.returncode == 0, done.stderr
    assert "(2 membership change(s))" in done.stdout
    assert await _memberships(pg_dsn) == [
        ("c1", "T1", "2026-11-01", None),
        ("c2", "T1", "2026-11-01", "2026-11-20"),
        ("c2", "T2", "2026-11-20", None),
        ("c3", "T2", "2026-11-01", None),
    ]
    shown = _headend("inventory", "areas", "--at", "2026-11-10", "--format", "json", "--dsn", pg_dsn)
    assert shown.returncode == 0, shown.stderr
    by_name = {a["name"]: a for a in json.loads(shown.stdout)}
    assert by_name["T1"]["members"] == ["c1", "c2"] and by_name["T1"]["ct_ratio"] == 40
    assert by_name["T2"]["members"] == ["c3"]
    now = _headend("inventory", "areas", "--at", "2026-11-20", "--format", "json", "--dsn", pg_dsn)
    assert {a["name"]: a["members"] for a in json.loads(now.stdout)} == {"T1": ["c1"], "T2": ["c2", "c3"]}


async def test_exported_toml_imports_back_unchanged(pg_dsn: str, tmp_path: Path) -> None:
    text = METERS.format(meters=_meters("s1", "c1", "c2")) + _area(
        "T1", "s1", ["c1", "c2"], "2026-11-01", ct_ratio=50, pt_ratio=100, loss_limit_pct=7.5
    )
    assert import_inventory_cli(pg_dsn, _write(tmp_path, "inv.toml", text)).returncode == 0
    exported = _headend("inventory", "areas", "--at", "2026-11-05", "--format", "toml", "--dsn", pg_dsn)
    assert exported.returncode == 0, exported.stderr
    assert "loss_limit_pct = 7.5" in exported.stdout and "effective = 2026-11-05" in exported.stdout
    before = await _memberships(pg_dsn)
    again = import_inventory_cli(pg_dsn, _write(tmp_path, "export.toml", exported.stdout))
    assert again.returncode == 0, again.stderr
    assert "(0 membership change(s))" in again.stdout
    assert await _memberships(pg_dsn) == before
    table = _headend("inventory", "areas", "--at", "2026-11-05", "--dsn", pg_dsn)
    assert "T1" in table.stdout and "c1, c2" in table.stdout and "1 area(s) on 2026-11-05" in table.stdout


@pytest.mark.parametrize(
    ("areas", "expected"),
    [
        (
            _area("T1", "nobody", [], "2026-11-01"),
            "areas[0]: supply_meter: no meter named or addressed 'nobody'",
        ),
        (_area("T1", "s1", ["s1"], "2026-11-01"), "areas[0]: members: 's1' is the area's supply meter"),
        (
            _area("T1", "s1", ["c1"], "2026-11-01") + _area("T2", "s2", ["c1"], "2026-11-01"),
            "areas[1]: members: 'c1' is also listed in area 'T1'",
        ),
        (
            _area("T1", "s1", ["c1"], "2026-11-01", ct_ratio=0),
            "areas[0]: ct_ratio: must be a finite number above 0",
        ),
        (
            _area("T1", "s1", [], "2026-11-01") + _area("T2", "s1", [], "2026-11-01"),
            "areas[1]: supply_meter: 's1' already supplies area 'T1'",
        ),
        (
            _area("T1", "s1", ["c1", "c1"], "2026-11-01"),
            "areas[0]: members: Value error, meter 'c1' listed twice",
        ),
    ],
)
async def test_bad_areas_are_refused_and_nothing_is_stored(
    pg_dsn: str, tmp_path: Path, areas: str, expected: str
) -> None:
    text = METERS.format(meters=_meters("s1", "s2", "c1")) + areas
    done = import_inventory_cli(pg_dsn, _write(tmp_path, "bad.toml", text))
    assert done.returncode == 2
    assert expected.replace("Value error, ", "") in done.stderr
    assert "Traceback" not in done.stderr
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM areas") == 0
        assert await conn.fetchval("SELECT count(*) FROM area_members") == 0
    finally:
        await conn.close()


async def test_a_move_dated_before_the_current_membership_is_refused(pg_dsn: str, tmp_path: Path) -> None:
    text = METERS.format(meters=_meters("s1", "s2", "c1")) + _area("T1", "s1", ["c1"], "2026-11-10")
    assert import_inventory_cli(pg_dsn, _write(tmp_path, "one.toml", text)).returncode == 0
    back = _area("T2", "s2", ["c1"], "2026-11-05")
    done = import_inventory_cli(pg_dsn, _write(tmp_path, "two.toml", back))
    assert done.returncode == 2
    assert "effective: meter" in done.stderr and "changed area on 2026-11-10, after 2026-11-05" in done.stderr
    assert await _memberships(pg_dsn) == [("c1", "T1", "2026-11-10", None)]


async def test_the_database_refuses_overlaps_and_non_admins(pg_dsn: str, tmp_path: Path) -> None:
    text = METERS.format(meters=_meters("s1", "s2", "c1")) + _area("T1", "s1", ["c1"], "2026-11-01")
    assert import_inventory_cli(pg_dsn, _write(tmp_path, "one.toml", text)).returncode == 0
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, o1001="operator")
        meter, area2 = await conn.fetchval("SELECT id FROM meters WHERE name = 'c1'"), None
        supply2 = await conn.fetchval("SELECT id FROM meters WHERE name = 's2'")
        area2 = await conn.fetchval(
            "INSERT INTO areas (name, supply_meter_id) VALUES ('T2', $1) RETURNING id", supply2
        )
        with pytest.raises(asyncpg.ExclusionViolationError, match="two areas at once"):
            await conn.execute(
                "INSERT INTO area_members (meter_id, area_id, valid_from) VALUES ($1, $2, '2026-12-01')",
                meter,
                area2,
            )
        with pytest.raises(asyncpg.CheckViolationError, match="supply meter"):
            await conn.execute(
                "INSERT INTO area_members (meter_id, area_id, valid_from) VALUES ($1, $2, '2026-12-01')",
                supply2,
                area2,
            )
    finally:
        await conn.close()
    # an operator without the admin role is refused
    text2 = _area("T1", "s1", [], "2026-11-02")
    done = _headend(
        "inventory", "import", str(_write(tmp_path, "two.toml", text2)), "--operator", "1001", "--dsn", pg_dsn
    )
    assert done.returncode != 0
    assert "admin" in done.stderr and "Traceback" not in done.stderr
    assert await _memberships(pg_dsn) == [("c1", "T1", "2026-11-01", None)]


async def test_least_privilege_logins_on_areas(pg_dsn: str, tmp_path: Path, logins: dict[str, str]) -> None:
    """The daemon and reporting logins may read areas, never write them; the desk login writes them only
    for a signed-in admin. Everyone may refresh line losses (derived figures), nobody writes them directly."""
    text = METERS.format(meters=_meters("s1", "c1")) + _area("T1", "s1", ["c1"], "2026-11-01")
    assert import_inventory_cli(pg_dsn, _write(tmp_path, "one.toml", text)).returncode == 0
    owner = await asyncpg.connect(pg_dsn)
    await add_operators(owner, o1001="operator", o1002="admin")
    await owner.close()
    for name in ("daemon", "reporting"):
        conn = await asyncpg.connect(logins[name])
        try:
            assert await conn.fetchval("SELECT count(*) FROM areas") == 1
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("UPDATE areas SET loss_limit_pct = 50")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(
                    "INSERT INTO line_losses (area_id, day, meters, inputs) VALUES (1, '2026-11-02', 1, '')"
                )
            assert await conn.fetchval(
                "SELECT headend_line_loss_refresh('2026-11-02', '2026-11-01T16:00Z', '2026-11-02T16:00Z')"
            ) in (0, 1)
        finally:
            await conn.close()
    desk = await asyncpg.connect(logins["billing"])
    try:
        await authenticate(desk, "1001", PASSWORD, "operator")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="admin"):
            await desk.execute("UPDATE areas SET loss_limit_pct = 50")
    finally:
        await desk.close()
    desk = await asyncpg.connect(logins["billing"])
    try:
        await authenticate(desk, "1002", PASSWORD, "admin")
        assert await desk.execute("UPDATE areas SET loss_limit_pct = 50") == "UPDATE 1"
    finally:
        await desk.close()
    assert await _memberships(pg_dsn) == [("c1", "T1", "2026-11-01", None)]
