"""``headend params set``: parameter sets added from a file or from a time-of-use tariff, versioned,
shown, listed and compared; bad input is one line; only an admin adds one (the database refuses
everyone else, tests/store/test_write_matrix.py)."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest

from headend.billing.tariff import parse_slot
from headend.params.from_tariff import set_from_slots
from headend.params.tou import ParamError, parse_set
from tests.support import cli
from tests.support.operators import PASSWORD, add_operators, operator_env

WINTER = {
    "seasons": [{"start": "01-01", "table": 1}],
    "daily_tables": [
        [{"start": "00:00", "tariff": 4}, {"start": "08:00", "tariff": 2}, {"start": "22:00", "tariff": 4}]
    ],
    "rest_days": ["saturday", "sunday"],
    "rest_table": 1,
    "tariffs": 4,
}
SUMMER = {
    "seasons": [{"start": "01-01", "table": 1}, {"start": "06-01", "table": 2}],
    "daily_tables": [
        [{"start": "00:00", "tariff": 4}, {"start": "08:00", "tariff": 2}, {"start": "22:00", "tariff": 4}],
        [{"start": "00:00", "tariff": 4}, {"start": "07:00", "tariff": 1}, {"start": "23:00", "tariff": 4}],
    ],
    "holidays": [{"date": "2026-10-01", "table": 2}],
    "rest_days": ["sunday"],
    "rest_table": 2,
    "tariffs": 4,
}


def headend(dsn: str, *args: str) -> cli.CliResult:
    return cli.headend(*args, "--dsn", dsn, env=operator_env(PASSWORD))


async def _operators(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await add_operators(conn, o4101="admin", o4102="operator")
    finally:
        await conn.close()


def _file(tmp_path: Path, name: str, data: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


async def test_sets_are_added_versioned_shown_listed_and_compared(pg_dsn: str, tmp_path: Path) -> None:
    await _operators(pg_dsn)
    add = ("params", "set", "add", "--operator", "4101", "home")
    first = headend(pg_dsn, *add, "--file", _file(tmp_path, "w.json", WINTER))
    assert (first.returncode, first.stdout.strip()) == (0, "parameter set home version 1 added"), first.stderr
    second = headend(pg_dsn, *add, "--file", _file(tmp_path, "s.json", SUMMER))
    assert second.stdout.strip() == "parameter set home version 2 added", second.stderr

    shown = json.loads(headend(pg_dsn, "params", "set", "show", "home").stdout)
    assert (shown["version"], shown["created_by"], shown["tariff"]) == (2, "4101", None)
    assert shown["counts"] == {
        "seasons": 2,
        "daily_tables": 2,
        "slots_per_day": 3,
        "tariffs": 4,
        "holidays": 1,
    }
    assert parse_set(shown["definition"]) == parse_set(SUMMER)
    assert json.loads(headend(pg_dsn, "params", "set", "show", "home@1").stdout)["version"] == 1
    listed = [json.loads(line) for line in headend(pg_dsn, "params", "set", "list").stdout.splitlines()]
    assert [(r["name"], r["version"]) for r in listed] == [("home", 2)]

    diff = headend(pg_dsn, "params", "set", "diff", "home@1", "home@2")
    assert diff.returncode == 0, diff.stderr
    assert diff.stdout.splitlines() == [
        "04000201 season_count: 1 -> 2",
        "04000202 daily_table_count: 1 -> 2",
        "04000205 holiday_count: 0 -> 1",
        "04000801 rest_day_word: 62 -> 126",
        "04000802 rest_day_table: 1 -> 2",
        '04010000 first_set_season_table: [{"start": "01-01", "table": 1}] -> '
        '[{"start": "01-01", "table": 1}, {"start": "06-01", "table": 2}]',
        "04010002 first_set_daily_table_2: - -> "
        '[{"start": "00:00", "tariff": 4}, {"start": "07:00", "tariff": 1}, {"start": "23:00", "tariff": 4}]',
        '04030001 holiday_1: - -> {"date": "2026-10-01", "table": 2}',
    ]
    same = headend(pg_dsn, "params", "set", "diff", "home@2", "home")
    assert same.stdout.strip() == "no differences"


async def test_a_time_of_use_tariff_gives_its_matching_set(pg_dsn: str) -> None:
    await _operators(pg_dsn)
    slots = ["06-01..09-30:08:00-22:00=0.70", "08:00-22:00=0.60", "22:00-08:00=0.30"]
    tariff = headend(pg_dsn, "tariffs", "add", "--operator", "4101", "resi", "--kind", "tou",
                     *[a for s in slots for a in ("--slot", s)])  # fmt: skip
    assert tariff.returncode == 0, tariff.stderr
    done = headend(pg_dsn, "params", "set", "from-tariff", "resi", "--operator", "4101")
    assert done.stdout.strip() == "parameter set resi version 1 added from tariff resi", done.stderr
    shown = json.loads(headend(pg_dsn, "params", "set", "show", "resi").stdout)
    assert shown["tariff"] == "resi"
    assert shown["definition"] == {
        # the dearest price is t1: summer days 08:00-22:00; the rest of the year t2 then, t3 at night
        "seasons": [{"start": "06-01", "table": 2}, {"start": "10-01", "table": 1}],
        "daily_tables": [
            [
                {"start": "00:00", "tariff": 3},
                {"start": "08:00", "tariff": 2},
                {"start": "22:00", "tariff": 3},
            ],
            [
                {"start": "00:00", "tariff": 3},
                {"start": "08:00", "tariff": 1},
                {"start": "22:00", "tariff": 3},
            ],
        ],
        "holidays": [],
        "rest_days": [],
        "rest_table": 1,
        "tariffs": 3,
    }
    flat = headend(
        pg_dsn, "tariffs", "add", "--operator", "4101", "flat", "--kind", "flat", "--price", "total=1"
    )
    assert flat.returncode == 0, flat.stderr
    refused = headend(pg_dsn, "params", "set", "from-tariff", "flat", "--operator", "4101")
    assert (refused.returncode, refused.stderr.strip()) == (1, "error: no time-of-use tariff 'flat'")


def test_a_tariff_that_needs_more_than_a_meter_holds_is_refused() -> None:
    five = [
        parse_slot(s)
        for s in ("00:00-04:00=1", "04:00-08:00=2", "08:00-12:00=3", "12:00-16:00=4", "16:00-00:00=5")
    ]
    with pytest.raises(ParamError, match="5 prices; a meter has 4 tariff registers"):
        set_from_slots(five)
    # 15 switch points a day (00:00 … 14:00)
    many = [parse_slot(f"{h:02d}:00-{h + 1:02d}:00={1 + h % 2}") for h in range(15)] + [
        parse_slot("15:00-00:00=1")
    ]
    with pytest.raises(ParamError, match="15 switch points a day; a meter holds 14"):
        set_from_slots(many)


async def test_bad_input_is_one_line_and_only_an_admin_adds(pg_dsn: str, tmp_path: Path) -> None:
    await _operators(pg_dsn)
    bad = dict(WINTER, seasons=[{"start": "02-30", "table": 1}])
    cases = {
        _file(tmp_path, "a.json", bad): "season start '02-30' is not MM-DD",
        _file(tmp_path, "b.json", dict(WINTER, seasons=[{"start": "01-01", "table": 2}])):
            "season 01-01: table must be a whole number from 1 to 1, got 2",
        _file(tmp_path, "c.json", dict(WINTER, colour="red")): "unknown key 'colour' in the parameter set",
        _file(tmp_path, "d.json", dict(WINTER, daily_tables=[[{"start": "08:00", "tariff": 1}]])):
            "daily table 1: switch points start at 00:00 and go up, each once",
        _file(tmp_path, "e.json", dict(WINTER, rest_days=["caturday"])): "rest day 'caturday' is not one of",
    }  # fmt: skip
    for path, message in cases.items():
        done = headend(pg_dsn, "params", "set", "add", "--operator", "4101", "x", "--file", path)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1 and message in lines[0], done.stderr
    (tmp_path / "f.json").write_text("{")
    done = headend(
        pg_dsn, "params", "set", "add", "--operator", "4101", "x", "--file", str(tmp_path / "f.json")
    )
    assert done.returncode == 1 and done.stderr.startswith(f"error: --file {tmp_path / 'f.json'}: not JSON")
    good = _file(tmp_path, "g.json", WINTER)
    done = headend(pg_dsn, "params", "set", "add", "--operator", "4102", "x", "--file", good)
    assert done.returncode == 1 and "admin" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    done = headend(pg_dsn, "params", "set", "add", "--operator", "4101", "no spaces", "--file", good)
    assert done.returncode == 1 and "set name 'no spaces'" in done.stderr
    missing = headend(pg_dsn, "params", "set", "show", "nothing@3")
    assert (missing.returncode, missing.stderr.strip()) == (1, "error: no parameter set 'nothing@3'")
    assert headend(pg_dsn, "params", "set", "list").stdout == ""
