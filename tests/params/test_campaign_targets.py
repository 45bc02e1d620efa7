"""Campaign targets by model, concentrator and transformer area (beside meters and channels): resolved
when the campaign is created, each meter once with the selector that named it, shown by a dry run
that creates nothing, and kept: a later inventory change (a meter leaving the area, a new meter of
the model) does not alter the campaign. Through the CLI's entry point in the test's process
(``headend_in_process``)."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg

from tests.params.test_param_sets import WINTER
from tests.support.cli import CliResult, headend_in_process
from tests.support.operators import add_operators, operator_env
from tests.support.postgres import run_sync

AT = "2027-01-01T00:00:00+08:00"


def cli(dsn: str, *args: str) -> CliResult:
    return headend_in_process(*args, "--dsn", dsn, env=operator_env())


async def _inventory(dsn: str) -> dict[str, int]:
    """line1 (tcp): meters A (model m1), B (m2), S (m2, area A1's supply meter); conc1 (a
    concentrator, terminal 0314-00001): C (m1) and a DL/T 645-1997 meter D (m1); area A1: B and C."""
    conn = await asyncpg.connect(dsn)
    try:
        await add_operators(conn, o5301="operator", o5303="admin")
        line = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('line1', 'tcp', '127.0.0.1:1') RETURNING id"
        )
        conc = await conn.fetchval(
            "INSERT INTO channels (name, kind, address)"
            " VALUES ('conc1', 'gdw1376', '0314-00001') RETURNING id"
        )
        ids = {}
        for key, channel, protocol, model in (
            ("A", line, "dlt645-2007", "m1"),
            ("B", line, "dlt645-2007", "m2"),
            ("S", line, "dlt645-2007", "m2"),
            ("C", conc, "dlt645-2007", "m1"),
            ("D", conc, "dlt645-1997", "m1"),
        ):
            ids[key] = await conn.fetchval(
                "INSERT INTO meters (protocol, address, model, channel_id)"
                " VALUES ($1, $2, $3, $4) RETURNING id",
                protocol,
                f"00000000530{'ABSCD'.index(key)}",
                model,
                channel,
            )
        area = await conn.fetchval(
            "INSERT INTO areas (name, supply_meter_id) VALUES ('A1', $1) RETURNING id", ids["S"]
        )
        for key in ("B", "C"):
            await conn.execute(
                "INSERT INTO area_members (meter_id, area_id, valid_from) VALUES ($1, $2, current_date - 1)",
                ids[key],
                area,
            )
        return ids
    finally:
        await conn.close()


async def _inventory_changes(dsn: str) -> None:
    """B leaves area A1 and a new meter E of model m1 is installed on line1."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "UPDATE area_members SET valid_to = current_date WHERE meter_id ="
            " (SELECT id FROM meters WHERE address = '000000005301')"
        )
        await conn.execute(
            "INSERT INTO meters (protocol, address, model, channel_id)"
            " SELECT 'dlt645-2007', '000000005309', 'm1', id FROM channels WHERE name = 'line1'"
        )
    finally:
        await conn.close()


def test_targets_by_model_concentrator_and_area_are_resolved_once(pg_dsn: str, tmp_path: Path) -> None:
    run_sync(lambda: _inventory(pg_dsn))
    path = tmp_path / "w.json"
    path.write_text(json.dumps(WINTER))
    assert cli(pg_dsn, "params", "set", "add", "w", "--file", str(path), "--operator", "5303").returncode == 0
    create = ("params", "campaign", "create", "c", "--set", "w", "--switch-at", AT, "--operator", "5301",
              "--model", "m1", "--area", "A1", "--concentrator", "0314-00001")  # fmt: skip
    dry = cli(pg_dsn, *create, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "000000005303  conc1  m1  concentrator 0314-00001",
        "000000005301  line1  m2  area A1",
        "000000005300  line1  m1  model m1",
        "campaign c would target 3 meters (dry run: nothing created)",
    ]
    assert cli(pg_dsn, "params", "campaign", "list").stdout == ""  # nothing created
    done = cli(pg_dsn, *create)
    assert done.stdout.strip() == "campaign c created with 3 meters; a different approver approves it"

    run_sync(lambda: _inventory_changes(pg_dsn))
    shown = json.loads(cli(pg_dsn, "params", "campaign", "show", "c", "--json").stdout)
    assert shown["targets"] == {"concentrator": ["0314-00001"], "area": ["A1"], "model": ["m1"]}
    assert [(m["address"], m["channel"], m["selected_by"]) for m in shown["meters"]] == [
        ("000000005300", "line1", "model m1"),
        ("000000005301", "line1", "area A1"),
        ("000000005303", "conc1", "concentrator 0314-00001"),
    ]
    # the same selection today resolves differently; the campaign does not
    again = cli(pg_dsn, *create[:3], "c2", *create[4:], "--dry-run")
    assert [line.split("  ")[0] for line in again.stdout.splitlines()[:-1]] == [
        "000000005303",
        "000000005300",
        "000000005309",
    ]


def test_an_empty_or_unknown_group_is_one_line(pg_dsn: str, tmp_path: Path) -> None:
    run_sync(lambda: _inventory(pg_dsn))
    path = tmp_path / "w.json"
    path.write_text(json.dumps(WINTER))
    assert cli(pg_dsn, "params", "set", "add", "w", "--file", str(path), "--operator", "5303").returncode == 0
    base = ("params", "campaign", "create", "c", "--set", "w", "--switch-at", AT, "--operator", "5301")
    cases = {
        ("--area", "nowhere"): "error: area 'nowhere' has no installed DL/T 645-2007 meters",
        ("--concentrator", "line1"): "error: concentrator 'line1' has no installed DL/T 645-2007 meters",
        ("--model", "m1", "--model", "m9"): "error: model 'm9' has no installed DL/T 645-2007 meters",
    }
    for args, message in cases.items():
        done = cli(pg_dsn, *base, *args)
        assert (done.returncode, done.stderr.strip()) == (1, message), args
    assert cli(pg_dsn, "params", "campaign", "list").stdout == ""
