"""``headend exceptions`` through its real interface: the life cycle (ack → dispatch → resolve) as
signed-in operators, each step a compare-and-set the database refuses out of order or to a viewer, the
audit trail in ``show``, the filters of ``list``, and bad requests as one line."""

from __future__ import annotations

import json
from datetime import timedelta

import asyncpg

from tests.support.cli import CliResult, headend_in_process
from tests.support.operators import add_operators, operator_env
from tests.support.postgres import run_sync


def _seed(dsn: str) -> dict[str, int]:
    async def seed() -> dict[str, int]:
        conn = await asyncpg.connect(dsn)
        try:
            await add_operators(conn, o1001="viewer", o1002="operator", o1003="admin")
            channel = await conn.fetchval(
                "INSERT INTO channels (name, kind, address) VALUES ('c', 'tcp', '127.0.0.1:1') RETURNING id"
            )
            meters = {}
            for n, name in enumerate(("supply", "m1", "m2")):
                meters[name] = await conn.fetchval(
                    "INSERT INTO meters (name, protocol, address, model, channel_id)"
                    " VALUES ($1, 'dlt645-2007', $2, 'dlt645-generic', $3) RETURNING id",
                    name,
                    f"{n + 1:012d}",
                    channel,
                )
            area = await conn.fetchval(
                "INSERT INTO areas (name, supply_meter_id) VALUES ('T1', $1) RETURNING id", meters["supply"]
            )
            await conn.execute(
                "INSERT INTO area_members (meter_id, area_id, valid_from) VALUES ($1, $2, '2020-01-01')",
                meters["m1"],
                area,
            )
            ids = {}
            for key, rule, column, subject, age in (
                ("tamper", "tamper", "meter_id", meters["m1"], timedelta(hours=1)),
                ("silent", "no_read", "meter_id", meters["m2"], timedelta(days=3)),
                ("loss", "loss_above_limit", "area_id", area, timedelta(minutes=10)),
            ):
                ids[key] = await conn.fetchval(
                    f"INSERT INTO exceptions (rule, {column}, first_seen, last_seen, evidence)"
                    " VALUES ($1, $2, now() - $3::interval, now(), '{\"seen\": 1}') RETURNING id",
                    rule,
                    subject,
                    age,
                )
            return ids
        finally:
            await conn.close()

    return run_sync(seed)


def _run(dsn: str, *args: str) -> CliResult:
    done = headend_in_process("exceptions", *args, "--dsn", dsn, env=operator_env())
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _listed(dsn: str, *args: str) -> list[int]:
    done = _run(dsn, "list", "--json", *args)
    assert done.returncode == 0, done.stderr
    return [e["id"] for e in json.loads(done.stdout)]


def test_the_life_cycle_as_operators_with_the_database_refusing_what_is_out_of_turn(
    pg_dsn: str, logins: dict[str, str]
) -> None:
    ids = _seed(pg_dsn)
    desk = logins["billing"]  # the operators' desk login (docs/operations.md), not the schema owner
    tamper = str(ids["tamper"])

    viewer = _run(desk, "ack", tamper, "--operator", "1001")
    assert viewer.returncode == 1 and viewer.stderr.count("\n") == 1
    assert "operator or admin role" in viewer.stderr

    early = _run(desk, "resolve", tamper, "--note", "looked", "--operator", "1002")
    assert early.returncode == 1 and f"exception {tamper} is open: not resolved now" in early.stderr

    acked = _run(desk, "ack", tamper, "--operator", "1002")
    assert acked.returncode == 0 and acked.stdout == f"exception {tamper} (tamper) acknowledged\n"
    again = _run(desk, "ack", tamper, "--operator", "1003")
    assert again.returncode == 1 and "is acknowledged: not acknowledged now" in again.stderr

    sent = _run(desk, "dispatch", tamper, "--to", "crew 3", "--operator", "1002")
    assert sent.returncode == 0 and "dispatched to crew 3" in sent.stdout
    blank = _run(desk, "resolve", tamper, "--note", "  ", "--operator", "1003")
    assert blank.returncode == 2 and blank.stderr.count("\n") == 1
    done = _run(desk, "resolve", tamper, "--note", "cover resealed, seal 88412", "--operator", "1003")
    assert done.returncode == 0, done.stderr

    shown = json.loads(_run(desk, "show", tamper, "--json").stdout)
    assert shown["state"] == "resolved" and shown["meter"] == "m1" and shown["area"] == "T1"
    assert (
        shown["acknowledged_by"],
        shown["dispatched_by"],
        shown["dispatched_to"],
        shown["resolved_by"],
    ) == (
        "1002",
        "1002",
        "crew 3",
        "1003",
    )
    assert shown["note"] == "cover resealed, seal 88412" and shown["evidence"] == {"seen": 1}
    assert shown["first_seen"].endswith("+00:00") and shown["closed_at"] is not None
    steps = [(t["actor"], t["action"]) for t in shown["trail"]][1:]  # after the opening
    assert steps == [
        ("1002", "exception.acknowledged"),
        ("1002", "exception.dispatched"),
        ("1003", "exception.resolved"),
    ]
    table = _run(desk, "show", tamper)
    assert "crew 3" in table.stdout and "exception.resolved" in table.stdout

    final = _run(desk, "ack", tamper, "--operator", "1003")
    assert final.returncode == 1 and "is resolved" in final.stderr


def test_list_filters_and_bad_requests(pg_dsn: str, logins: dict[str, str]) -> None:
    ids = _seed(pg_dsn)
    pg_dsn = logins["reporting"]  # listing needs no more than the reporting login
    assert _listed(pg_dsn) == [ids["silent"], ids["tamper"], ids["loss"]]  # oldest first
    assert _listed(pg_dsn, "--rule", "no_read") == [ids["silent"]]
    assert _listed(pg_dsn, "--area", "T1") == [ids["tamper"], ids["loss"]]  # its meters' and its own
    assert _listed(pg_dsn, "--older-than", "2d") == [ids["silent"]]
    assert _listed(pg_dsn, "--state", "resolved") == []
    table = _run(pg_dsn, "list", "--rule", "tamper")
    assert "1 exception(s)" in table.stdout and "m1" in table.stdout

    for args, code, says in (
        (("list", "--rule", "theft"), 2, "--rule 'theft'"),
        (("list", "--state", "closed"), 2, "--state 'closed'"),
        (("list", "--older-than", "soon"), 2, "--older-than"),
        (("list", "--area", "T9"), 1, "no area named 'T9'"),
        (("show", "999"), 1, "no exception 999"),
        (("ack", str(ids["silent"]), "--operator", "1002"), 1, "permission denied"),  # reporting: read only
    ):
        bad = _run(pg_dsn, *args)
        assert bad.returncode == code and says in bad.stderr and bad.stderr.count("\n") == 1, (args, bad)
