"""``headend params campaign``: a campaign needs two people, moves only as its state allows, and bad
input is one line (the database refuses what the CLI would not check, test_write_matrix.py)."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg

from tests.params.test_param_sets import WINTER, headend
from tests.support.operators import add_operators


async def _setup(dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await add_operators(conn, o5201="operator,approver", o5202="approver", o5203="admin", o5204="viewer")
        channel = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('line1', 'tcp', '127.0.0.1:1') RETURNING id"
        )
        for address in ("000000000011", "000000000012"):
            await conn.execute(
                "INSERT INTO meters (protocol, address, model, channel_id)"
                " VALUES ('dlt645-2007', $1, 'm', $2)",
                address,
                channel,
            )
    finally:
        await conn.close()
    path = tmp_path / "w.json"
    path.write_text(json.dumps(WINTER))
    assert (
        headend(dsn, "params", "set", "add", "w", "--file", str(path), "--operator", "5203").returncode == 0
    )


def _error(done: tuple[int, str, str]) -> str:
    code, _, err = done
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    return lines[0]


async def test_two_people_and_the_moves_a_state_allows(pg_dsn: str, tmp_path: Path) -> None:
    await _setup(pg_dsn, tmp_path)
    base = ("params", "campaign")
    at = "2027-01-01T00:00:00+08:00"
    created = headend(pg_dsn, *base, "create", "c", "--set", "w@1", "--switch-at", at,
                      "--meter", "000000000011", "--meter", "000000000012", "--operator", "5201")  # fmt: skip
    assert created.returncode == 0, created.stderr
    mine = _error(headend(pg_dsn, *base, "approve", "c", "--operator", "5201"))
    assert mine == "error: campaign c: approved by someone other than its creator"
    assert "cannot go from draft to paused" in _error(
        headend(pg_dsn, *base, "pause", "c", "--operator", "5201")
    )
    assert (
        headend(pg_dsn, *base, "approve", "c", "--operator", "5202").stdout.strip() == "campaign c approved"
    )
    assert "not a draft" in _error(headend(pg_dsn, *base, "approve", "c", "--operator", "5202"))
    assert "operator role" in _error(headend(pg_dsn, *base, "start", "c", "--operator", "5202"))
    assert headend(pg_dsn, *base, "start", "c", "--operator", "5201").stdout.strip() == "campaign c running"
    assert headend(pg_dsn, *base, "pause", "c", "--operator", "5201").stdout.strip() == "campaign c paused"
    assert headend(pg_dsn, *base, "resume", "c", "--operator", "5201").stdout.strip() == "campaign c running"
    assert (
        headend(pg_dsn, *base, "cancel", "c", "--operator", "5201").stdout.strip() == "campaign c cancelled"
    )
    progress = ["campaign c: cancelled", f"[{'.' * 30}] 0/2 meters settled (0%)",
                "pending 2  written 0  verified 0  skipped 0  failed 0"]  # fmt: skip
    assert headend(pg_dsn, *base, "show", "c").stdout.splitlines() == progress
    assert headend(pg_dsn, *base, "show", "c", "--watch").stdout.splitlines() == progress  # over already
    shown = json.loads(headend(pg_dsn, *base, "show", "c", "--json").stdout)
    assert (shown["state"], shown["set"], shown["created_by"], shown["approved_by"]) == (
        "cancelled",
        "w@1",
        "5201",
        "5202",
    )
    assert [(m["address"], m["state"], m["attempts"]) for m in shown["meters"]] == [
        ("000000000011", "pending", 0),
        ("000000000012", "pending", 0),
    ]


async def test_bad_input_is_one_line(pg_dsn: str, tmp_path: Path) -> None:
    await _setup(pg_dsn, tmp_path)
    create = ("params", "campaign", "create", "x", "--operator", "5201")
    at = ("--switch-at", "2027-01-01T00:00:00+08:00")
    cases = {
        (*create, "--set", "w", *at): "give the targets: --meter ADDRESS, --channel, --concentrator,",
        (*create, "--set", "w", *at, "--meter", "999999999999"): "unknown meter '999999999999'",
        (*create, "--set", "w", *at, "--channel", "nowhere"): "channel 'nowhere' has no installed DL/T",
        (*create, "--set", "w@7", *at, "--channel", "line1"): "no parameter set 'w@7'",
        (*create, "--set", "w", "--switch-at", "2027-01-01", "--channel", "line1"): "give its UTC offset",
        (*create, "--set", "w", "--switch-at", "soon", "--channel", "line1"): "expected an ISO 8601 time",
        (*create, "--set", "w", *at, "--channel", "line1", "--window", "9-17"):
            "--window: window '9-17': expected HH:MM-HH:MM, e.g. 09:00-17:00",
        ("params", "campaign", "approve", "nothing", "--operator", "5202"): "no campaign 'nothing'",
        ("params", "campaign", "create", "v", "--set", "w", *at, "--channel", "line1", "--operator", "5204"):
            "operator role",
    }  # fmt: skip
    for args, message in cases.items():
        assert message in _error(headend(pg_dsn, *args)), args
    assert headend(pg_dsn, "params", "campaign", "list").stdout == ""
