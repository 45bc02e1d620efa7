"""Which account a meter belongs to is its assignment rows alone (issue 22): an inventory re-import
through the CLI, on the desk login, never changes an assignment it does not mention, refuses one that
contradicts it; the meter carries no copy of its account, and `billing holds` names the account of its
open assignment."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg

from tests.support import cli
from tests.support.operators import INVENTORY_ADMIN, add_operators, import_inventory_cli
from tests.support.postgres import run_sync


def _inventory(path: Path, account: str | None) -> Path:
    key = f'account = "{account}"\n' if account else ""
    path.write_text(
        '[[channels]]\nname = "bus"\nurl = "tcp://127.0.0.1:1"\n'
        '\n[[meters]]\nchannel = "bus"\nname = "flat-1"\nprotocol = "dlt645-2007"\naddress = "000000000001"\n'
        f'model = "dlt645-generic"\nhas_relay = true\n{key}'
    )
    return path


async def _state(dsn: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT a.number, x.operator, x.effective_to"
            " FROM meter_assignments x JOIN accounts a ON a.id = x.account_id ORDER BY x.id"
        )
        return [tuple(r) for r in rows]
    finally:
        await conn.close()


def test_a_reimport_never_changes_an_assignment(pg_dsn: str, logins: dict[str, str], tmp_path: Path) -> None:
    async def seed() -> None:
        owner = await asyncpg.connect(pg_dsn)
        try:
            await add_operators(owner, **{f"o{INVENTORY_ADMIN}": "admin"})
            await owner.execute(
                "INSERT INTO accounts (number, kind) VALUES ('A1', 'prepaid'), ('A2', 'prepaid')"
            )
        finally:
            await owner.close()

    run_sync(seed)
    desk = logins["billing"]
    first = import_inventory_cli(desk, _inventory(tmp_path / "first.toml", "A1"))
    assert first.returncode == 0, first.stderr
    assigned = [("A1", INVENTORY_ADMIN, None)]
    assert run_sync(lambda: _state(pg_dsn)) == assigned

    # the same file without account keys (say, to rename meters): the assignment stays, billed and cut
    again = import_inventory_cli(desk, _inventory(tmp_path / "names.toml", None))
    assert again.returncode == 0, again.stderr
    assert run_sync(lambda: _state(pg_dsn)) == assigned

    # a file that names another account is refused with one line, and nothing changes
    moved = import_inventory_cli(desk, _inventory(tmp_path / "moved.toml", "A2"))
    assert moved.returncode != 0
    assert moved.stderr.strip().count("\n") == 0 and "Traceback" not in moved.stderr
    assert "meter flat-1 is assigned to account A1, not A2" in moved.stderr
    assert run_sync(lambda: _state(pg_dsn)) == assigned

    async def hold_the_meter() -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            assert not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM information_schema.columns"
                " WHERE table_name = 'meters' AND column_name = 'account_id')"
            )  # no second copy on the meter that could drift
            await conn.execute(
                "INSERT INTO quantities (name) VALUES ('energy_import_kwh') ON CONFLICT DO NOTHING"
            )
            await conn.execute(
                "INSERT INTO vee_holds (meter_id, quantity_id, rule, reason, first_ts)"
                " SELECT m.id, q.id, 'jump', 'seeded', now() FROM meters m, quantities q"
                " WHERE q.name = 'energy_import_kwh'"
            )
        finally:
            await conn.close()

    run_sync(hold_the_meter)
    held = cli.headend("billing", "holds", "--dsn", desk)
    assert held.returncode == 0, held.stderr
    [row] = [json.loads(line) for line in held.stdout.splitlines()]
    assert (row["meter"], row["account"]) == ("flat-1", "A1")
