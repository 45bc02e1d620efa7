"""A concentrator's total groups through the daemon's engine: inventoried as meters of protocol
``gdw1376-group`` (address = group number), their AFN 0D F73..F76 curves backfilled for a day and
stored as the group's quantities with the values the simulator's members give (runs in the suite's
storage mode; the native layout with ``HEADEND_EMBEDDED_TIMESCALEDB=off``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from headend.inventory import InventoryError, import_inventory, read_inventory
from protocols.gdw1376 import CURVE_KINDS, CurveRequest, GroupMember, TotalGroup
from tests.concentrator.support import engine_config, inventory_toml, listening, url_of
from tests.support.engine import engine_for
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(180)

GROUPS = (
    TotalGroup(1, (GroupMember(1), GroupMember(2), GroupMember(3, subtract=True))),
    TotalGroup(2, (GroupMember(2), GroupMember(4))),
)
QUANTITIES = {
    73: "group_power_kw",
    74: "group_reactive_power_kvar",
    75: "group_energy_kwh",
    76: "group_reactive_energy_kvarh",
}
ROWS_SQL = (
    "SELECT m.address, q.name, r.ts, r.value, r.quality FROM readings r JOIN meters m ON m.id = r.meter_id"
    " JOIN quantities q ON q.id = r.quantity_id WHERE m.protocol = 'gdw1376-group' ORDER BY 1, 2, 3"
)
OFFSET = timedelta(hours=8)
NO_PORT = "a total group has no port, pn, unit_id or relay"


def _groups(path: Path, installed: datetime, numbers: tuple[int, ...] = (1, 2)) -> str:
    return "".join(
        f'[[meters]]\nchannel = "conc-1"\nprotocol = "gdw1376-group"\naddress = "{n}"\n'
        f'model = "gdw1376-total-group"\nname = "group-{n}"\ninstalled_at = "{installed.isoformat()}"\n\n'
        for n in numbers
    )


async def test_total_group_curves_are_backfilled_and_stored_as_the_groups_quantities(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with listening(meters=4, history_days=2, total_groups=GROUPS) as sim:
        conn = await asyncpg.connect(pg_dsn)
        try:
            installed = datetime.now(UTC) - timedelta(days=1)
            inventory = inventory_toml(tmp_path / "inv.toml", url_of(sim), sim, installed_at=installed)
            inventory.write_text(inventory.read_text() + "\n" + _groups(inventory, installed))
            await import_inventory(conn, read_inventory(inventory))
            config = engine_config(
                ["energy_import_kwh"],
                polling={"interval": "15m", "inventory_reload": "1h"},
                backfill={
                    "enabled": True,
                    "lookback": "1d",
                    "retry_every": "1h",
                    "max_intervals_per_meter": 100,
                },
                read_plans={
                    "default": {"quantities": ["energy_import_kwh"]},
                    "gdw1376-total-group": {"quantities": list(QUANTITIES.values())},
                },
            )
            engine = engine_for(config, pg_dsn, tmp_path)

            async def stored() -> bool:
                await engine.writer.flush()
                count = await conn.fetchval(
                    "SELECT count(*) FROM readings r JOIN quantities q ON q.id = r.quantity_id"
                    " WHERE q.name = 'group_power_kw' AND r.quality = 'backfilled'"
                )
                return bool(count >= 2 * 90)

            await engine.start()
            try:
                await wait_until(stored, 120, "a day of both groups' power curves")
            finally:
                await engine.stop()
            rows = list(await conn.fetch(ROWS_SQL))
        finally:
            await conn.close()
        # what the simulator's groups give at each stored point (their members' load profiles)
        first = min(r["ts"] for r in rows)
        local_first = (first + OFFSET).replace(tzinfo=None)
        points = int((max(r["ts"] for r in rows) - first) / timedelta(minutes=15)) + 1
        expected: dict[tuple[str, str, datetime], float] = {}
        for group in GROUPS:
            for fn, name in QUANTITIES.items():
                asked = CurveRequest(local_first, 1, points)
                curve = sim.groups.curve(group.number, fn, asked, sim.pool.profile_of)
                assert curve is not None
                field = CURVE_KINDS[fn].field  # as the frame carries it: A.2 three digits, A.3 whole units
                for index, value in enumerate(curve.values):
                    if value is not None:
                        at = first + index * timedelta(minutes=15)
                        expected[(str(group.number), name, at)] = field.value_of(field.bytes_of(value))
    asked = {int(key[7:]) for key in sim.counts if key.startswith("curve_F")}
    assert asked == {73, 74, 75, 76, 101}  # the groups' curves; F101 for the meters' energy plan
    keys = [(r["address"], r["name"], r["ts"]) for r in rows]
    assert len(keys) == len(set(keys))  # nothing stored twice
    assert {r["quality"] for r in rows} == {"backfilled"}
    for row in rows:
        key = (row["address"], row["name"], row["ts"])
        assert row["value"] == pytest.approx(expected[key], abs=1e-6), key
    for number in ("1", "2"):
        for name in QUANTITIES.values():
            mine = [r["value"] for r in rows if r["address"] == number and r["name"] == name]
            assert len(mine) >= 90, (number, name)
        power = [r["value"] for r in rows if r["address"] == number and r["name"] == "group_power_kw"]
        energy = [r["value"] for r in rows if r["address"] == number and r["name"] == "group_energy_kwh"]
        assert any(v != 0 for v in power) and sum(energy) != 0  # the members' load shows


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('address = "9"', "meters[0]: (row): a total group's address is its number 1..8, got '9'"),
        ('address = "1"\nport = 2', f"meters[0]: (row): {NO_PORT}"),
        ('address = "1"\nhas_relay = true', f"meters[0]: (row): {NO_PORT}"),
    ],
)
def test_a_bad_total_group_entry_is_refused_in_one_line(tmp_path: Path, entry: str, message: str) -> None:
    path = tmp_path / "inv.toml"
    path.write_text(
        '[[channels]]\nname = "conc-1"\nurl = "gdw1376+tcp://127.0.0.1:9000?address=0314-25394"\n\n'
        '[[meters]]\nchannel = "conc-1"\nprotocol = "gdw1376-group"\n'
        f'model = "gdw1376-total-group"\n{entry}\n'
    )
    with pytest.raises(InventoryError) as raised:
        read_inventory(path)
    assert str(raised.value).splitlines() == [f"{path}: {message}"]


def test_a_total_group_needs_a_concentrator_channel(tmp_path: Path) -> None:
    path = tmp_path / "inv.toml"
    path.write_text(
        '[[channels]]\nname = "bus-1"\nurl = "tcp://127.0.0.1:9000"\n\n'
        '[[meters]]\nchannel = "bus-1"\nprotocol = "gdw1376-group"\n'
        'model = "gdw1376-total-group"\naddress = "1"\n'
    )
    with pytest.raises(InventoryError) as raised:
        read_inventory(path)
    assert "protocol gdw1376-group cannot run on a tcp:// channel" in str(raised.value)
    assert len(str(raised.value).splitlines()) == 1
