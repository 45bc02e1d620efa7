"""``headend params check``: meters whose time-of-use schedule differs from the one their tariff implies."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import asyncpg
import typer

from headend.billing.tariff import TariffError, slots_from
from headend.commands.common import Dsn, fail, run_with_conn
from headend.commands.views import echo_json, echo_table
from headend.params.check import compare
from headend.params.from_tariff import set_from_slots
from headend.params.tou import ParamError, TouSet
from headend.store import tou_checks

POLL_S = 0.5


def _expected(targets: list[asyncpg.Record]) -> dict[int, TouSet]:
    """The set each tariff implies, by tariff id (a tariff that implies none fails the command)."""
    sets: dict[int, TouSet] = {}
    for target in targets:
        tariff_id = int(target["tariff_id"])
        if tariff_id not in sets:
            try:
                sets[tariff_id] = set_from_slots(slots_from(json.loads(target["definition"])))
            except (ParamError, TariffError) as exc:
                fail(f"tariff {target['tariff']}: {exc}")
    return sets


def _verdict(
    target: asyncpg.Record, back: asyncpg.Record | None, sets: dict[int, TouSet], late: bool
) -> dict[str, Any]:
    """One meter's line: its read-back (``late``: the read asked now did not come in time) compared."""
    active = None if back is None else back["active_set"]
    if late:
        state, detail = "not read", "the daemon did not read it within --wait"
    elif back is not None and back["read_at"] is not None and back["error"] is not None:
        state, detail = "error", str(back["error"])
    else:
        items = None if back is None or back["items"] is None else json.loads(back["items"])
        verdict = compare(sets[int(target["tariff_id"])], active, items)
        state, detail = verdict.state, verdict.detail
    return {
        "address": target["address"],
        "channel": target["channel"],
        "tariff": target["tariff"],
        "active_set": active,
        "read_at": None if back is None else back["read_at"],
        "state": state,
        "detail": detail,
    }


def check(
    tariff: Annotated[str | None, typer.Option("--tariff", help="Only meters on this tariff.")] = None,
    channel: Annotated[
        list[str] | None, typer.Option("--channel", help="Only meters of this channel (repeatable).")
    ] = None,
    area: Annotated[
        list[str] | None,
        typer.Option("--area", help="Only current members of this transformer area (repeatable)."),
    ] = None,
    read: Annotated[
        bool,
        typer.Option("--read", help="Have the daemon read every meter back now (else: the last read-back)."),
    ] = False,
    wait: Annotated[
        float, typer.Option("--wait", min=1, max=3600, help="Seconds to wait for the daemon's reads.")
    ] = 120.0,
    as_json: Annotated[bool, typer.Option("--json", help="Every meter as JSON.")] = False,
    dsn: Dsn = None,
) -> None:
    """Compare the schedule each meter runs (its active set, as read back by the daemon) with the one
    its account's time-of-use tariff implies; exit 1 when any meter differs or has no read-back."""
    targets = run_with_conn(
        dsn, lambda conn: tou_checks.check_targets(conn, tariff, channel or [], area or [])
    )
    if not targets:
        fail("no DL/T 645-2007 meter on a time-of-use tariff matches")
    sets = _expected(targets)
    ids = [int(t["meter_id"]) for t in targets]
    if read:
        asked = [(int(t["meter_id"]), json.dumps(sets[int(t["tariff_id"])].to_json())) for t in targets]
        run_with_conn(dsn, lambda conn: tou_checks.ask_reads(conn, asked))
    deadline = time.monotonic() + wait
    while True:
        backs = run_with_conn(dsn, lambda conn: tou_checks.read_backs(conn, ids))
        found = {int(r["meter_id"]): r for r in backs}
        pending = {i for i, r in found.items() if r["read_at"] is None or r["read_at"] < r["requested_at"]}
        if not read or not pending or time.monotonic() >= deadline:
            break
        time.sleep(POLL_S)
    report = [
        _verdict(t, found.get(int(t["meter_id"])), sets, read and int(t["meter_id"]) in pending)
        for t in targets
    ]
    if as_json:
        echo_json(report)
    else:
        columns = ["address", "channel", "tariff", "active_set", "read_at", "state", "detail"]
        echo_table("time-of-use schedules against their tariffs", columns, report)
        differing = sum(r["state"] != "matches" for r in report)
        typer.echo(f"\n{len(report) - differing} of {len(report)} meters match their tariff")
    if any(r["state"] != "matches" for r in report):
        raise typer.Exit(1)
