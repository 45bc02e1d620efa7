"""``headend params set``: time-of-use parameter sets (add, from a tariff, show, list, diff)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import typer

from headend.billing.tariff import TariffError, slots_from
from headend.commands.app import CommandGroup
from headend.commands.auth import OperatorId, login
from headend.commands.common import Dsn, fail, run_with_conn
from headend.commands.params_check import check
from headend.operators import OperatorError
from headend.params.from_tariff import set_from_slots
from headend.params.progress import progress_lines
from headend.params.tou import ParamError, TouSet, item_diff, parse_set
from headend.params.windows import WindowError, parse_window
from headend.store import campaigns as campaigns_store
from headend.store.audit import audit
from headend.store.param_sets import add_version, latest_versions, set_version
from headend.store.tariffs import revisions, tariff_by_name
from protocols.dlt645 import lookup

T = TypeVar("T")

params_app = CommandGroup(
    help="Meter parameters from the master station (time of use).", no_args_is_help=True
)
set_app = CommandGroup(
    help="Time-of-use parameter sets: seasons, daily tables, holidays, rest days (versioned).",
    no_args_is_help=True,
)
params_app.add_typer(set_app, name="set")
params_app.command("check")(check)


def _read_file(path: Path) -> TouSet:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        fail(f"--file {path}: {exc.strerror or exc}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        fail(f"--file {path}: not JSON ({exc})")
    try:
        return parse_set(data)
    except ParamError as exc:
        fail(f"--file {path}: {exc}")


def _add(dsn: str | None, operator: str | None, name: str, tou: TouSet | None, tariff: str | None) -> int:
    """Add the next version of ``name`` (from ``tou``, or from the tariff ``tariff``); the version."""
    admin = login(operator)

    async def work(conn: asyncpg.Connection) -> int:
        await admin.sign_in(conn, "admin")
        async with conn.transaction():
            chosen, tariff_id = tou, None
            if tariff is not None:
                row = await tariff_by_name(conn, tariff)
                if row is None or row["kind"] != "tou":
                    raise ParamError(f"no time-of-use tariff {tariff!r}")
                tariff_id = int(row["id"])
                revised = await revisions(conn, tariff_id)
                definition = json.loads(revised[-1]["definition"] if revised else row["definition"])
                chosen = set_from_slots(slots_from(definition))
            assert chosen is not None
            version = await add_version(conn, name, chosen.to_json(), admin.operator_id, tariff_id)
            details: dict[str, object] = {"version": version, "tariff": tariff, "counts": chosen.counts()}
            await audit(
                conn, admin.operator_id, "params.set_added", "parameter_set", name, "params set", details
            )
            return version

    try:
        return run_with_conn(dsn, work)
    except (ParamError, TariffError, OperatorError, asyncpg.InsufficientPrivilegeError) as exc:
        fail(str(exc))
    except asyncpg.CheckViolationError:
        fail(f"set name {name!r}: letters, digits, '_', '.', '-', at most 64")


@set_app.command("add")
def add(
    name: str,
    file: Annotated[Path, typer.Option("--file", help="The set as JSON (docs/operations.md).")],
    operator: OperatorId,
    dsn: Dsn = None,
) -> None:
    """Add the next version of a parameter set from a JSON file (admin; audited)."""
    tou = _read_file(file)
    version = _add(dsn, operator, name, tou, None)
    typer.echo(f"parameter set {name} version {version} added")


@set_app.command("from-tariff")
def from_tariff(
    tariff: str,
    operator: OperatorId,
    name: Annotated[
        str | None, typer.Option("--name", help="The set's name (default: the tariff's).")
    ] = None,
    dsn: Dsn = None,
) -> None:
    """Add the parameter set a time-of-use tariff's slots imply: its prices become tariff registers,
    dearest first (admin; audited)."""
    chosen = name or tariff
    version = _add(dsn, operator, chosen, None, tariff)
    typer.echo(f"parameter set {chosen} version {version} added from tariff {tariff}")


def _spec(text: str) -> tuple[str, int | None]:
    """``NAME`` or ``NAME@VERSION``."""
    name, at, version = text.partition("@")
    if not at:
        return name, None
    if not version.isdigit() or int(version) < 1:
        fail(f"{text!r}: expected NAME or NAME@VERSION (a version from 1)")
    return name, int(version)


def _record(row: asyncpg.Record) -> dict[str, Any]:
    definition = json.loads(row["definition"])
    return {
        "name": row["name"],
        "version": row["version"],
        "tariff": row["tariff"],
        "created_by": row["created_by"],
        "created_at": row["created_at"].isoformat(),
        "counts": parse_set(definition).counts(),
        "definition": definition,
    }


def _load(dsn: str | None, spec: str) -> dict[str, Any]:
    name, version = _spec(spec)
    found = run_with_conn(dsn, lambda conn: set_version(conn, name, version))
    if found is None:
        fail(f"no parameter set {spec!r}")
    return _record(found)


@set_app.command("show")
def show(
    spec: Annotated[str, typer.Argument(help="NAME or NAME@VERSION (default: latest).")], dsn: Dsn = None
) -> None:
    """One version of a parameter set, as JSON."""
    typer.echo(json.dumps(_load(dsn, spec), indent=2, ensure_ascii=False))


@set_app.command("list")
def list_(dsn: Dsn = None) -> None:
    """The latest version of every parameter set, as JSON lines."""
    for found in run_with_conn(dsn, latest_versions):
        record = _record(found)
        del record["definition"]
        typer.echo(json.dumps(record, ensure_ascii=False))


def _text(value: object) -> str:
    return "-" if value is None else json.dumps(value, default=str, ensure_ascii=False)


@set_app.command("diff")
def diff(
    old: Annotated[str, typer.Argument(help="NAME or NAME@VERSION.")],
    new: Annotated[str, typer.Argument(help="NAME or NAME@VERSION.")],
    dsn: Dsn = None,
) -> None:
    """What a meter holding OLD would have written to hold NEW: one line per item that differs."""
    before = parse_set(_load(dsn, old)["definition"]).meter_items(1)
    after = parse_set(_load(dsn, new)["definition"]).meter_items(1)
    changes = item_diff(before, after)
    gone = {di: (value, None) for di, value in before.items() if di not in after}
    for di, (was, becomes) in sorted((changes | gone).items()):
        item = lookup(di)
        label = item.name if item else di
        typer.echo(f"{di} {label}: {_text(was)} -> {_text(becomes)}")
    if not changes and not gone:
        typer.echo("no differences")


def register(app: typer.Typer) -> None:
    """Attach ``headend params``."""
    app.add_typer(params_app, name="params")


campaign_app = CommandGroup(
    help="Time-of-use download campaigns: a set and a switch time for meters, two people, run by the daemon.",
    no_args_is_help=True,
)
params_app.add_typer(campaign_app, name="campaign")


def _operator_work(
    dsn: str | None, operator: str | None, role: str, work: Callable[[asyncpg.Connection, str], Awaitable[T]]
) -> T:
    """``work(conn, operator_id)`` signed in with ``role``; database refusals are one line."""
    who = login(operator)

    async def signed_in(conn: asyncpg.Connection) -> T:
        await who.sign_in(conn, role)
        async with conn.transaction():
            return await work(conn, who.operator_id)

    try:
        return run_with_conn(dsn, signed_in)
    except (ParamError, OperatorError, asyncpg.InsufficientPrivilegeError) as exc:
        fail(str(exc))


def _repeatable(flag: str, help_text: str) -> Any:
    return typer.Option(flag, help=f"{help_text} (repeatable).")


async def _resolve(
    conn: asyncpg.Connection, meters: list[str], groups: list[tuple[str, str]]
) -> list[tuple[int, str]]:
    """The target meters, each with the first selector that named it: the listed meters first, then
    every installed DL/T 645-2007 meter of each group (raises ParamError naming an empty group)."""
    chosen: dict[int, str] = {}
    wanted = list(dict.fromkeys(meters))
    by_key = await campaigns_store.meters_by_address(conn, wanted)
    missing = [m for m in wanted if m not in by_key]
    if missing:
        raise ParamError(f"unknown meter {missing[0]!r}")
    for key in wanted:
        chosen.setdefault(by_key[key], f"meter {key}")
    for kind, value in groups:
        ids = await campaigns_store.meters_selected(conn, kind, value)
        if not ids:
            raise ParamError(f"{kind} {value!r} has no installed DL/T 645-2007 meters")
        for meter_id in ids:
            chosen.setdefault(meter_id, f"{kind} {value}")
    return list(chosen.items())


@campaign_app.command("create")
def campaign_create(
    name: str,
    parameter_set: Annotated[str, typer.Option("--set", help="NAME or NAME@VERSION of the parameter set.")],
    switch_at: Annotated[
        str, typer.Option("--switch-at", help="When meters switch to the set (ISO 8601 with its offset).")
    ],
    operator: OperatorId,
    meter: Annotated[list[str] | None, _repeatable("--meter", "A target meter (address or name)")] = None,
    channel: Annotated[
        list[str] | None, _repeatable("--channel", "Every DL/T 645-2007 meter of a channel")
    ] = None,
    concentrator: Annotated[
        list[str] | None,
        _repeatable("--concentrator", "Every meter behind a concentrator (its channel name or address)"),
    ] = None,
    area: Annotated[
        list[str] | None, _repeatable("--area", "Every current member meter of a transformer area")
    ] = None,
    model: Annotated[
        list[str] | None, _repeatable("--model", "Every installed DL/T 645-2007 meter of a model")
    ] = None,
    max_attempts: Annotated[int, typer.Option("--max-attempts", min=1, max=10, help="Tries per meter.")] = 3,
    window: Annotated[
        list[str] | None,
        typer.Option(
            "--window",
            help="HH:MM-HH:MM local time in which writes may run (repeatable; none: any time outside"
            " the midnight freeze and the peak reading windows).",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="List the meters the targets resolve to now; create nothing."),
    ] = False,
    dsn: Dsn = None,
) -> None:
    """Create a campaign as a draft (an operator; audited): a different approver approves it. The
    targets (meters, channels, concentrators, areas, models; together, each meter once) are resolved
    now and kept with the campaign: a later inventory change does not alter it."""
    try:
        windows = [str(parse_window(w)) for w in window or []]
    except WindowError as exc:
        fail(f"--window: {exc}")
    try:
        switch = datetime.fromisoformat(switch_at)
    except ValueError:
        fail(f"--switch-at {switch_at!r}: expected an ISO 8601 time, e.g. 2027-01-01T00:00:00+08:00")
    if switch.tzinfo is None:
        fail(f"--switch-at {switch_at!r}: give its UTC offset, e.g. +08:00")
    given = {"channel": channel, "concentrator": concentrator, "area": area, "model": model}
    groups = [(kind, value) for kind, values in given.items() for value in dict.fromkeys(values or [])]
    if not meter and not groups:
        fail("give the targets: --meter ADDRESS, --channel, --concentrator, --area or --model NAME ...")
    targets = {k: list(dict.fromkeys(v)) for k, v in ({"meter": meter} | given).items() if v}
    set_name, version = _spec(parameter_set)

    async def work(conn: asyncpg.Connection, me: str) -> list[dict[str, Any]] | int:
        found = await set_version(conn, set_name, version)
        if found is None:
            raise ParamError(f"no parameter set {parameter_set!r}")
        chosen = await _resolve(conn, meter or [], groups)
        if dry_run:
            listed = await campaigns_store.target_rows(conn, [m for m, _ in chosen])
            return [dict(r) | {"selected_by": by} for r, (_, by) in zip(listed, chosen, strict=True)]
        await campaigns_store.create(
            conn, name, int(found["id"]), switch, max_attempts, me, chosen, windows, json.dumps(targets)
        )
        details = {
            "set": f"{set_name}@{found['version']}",
            "switch_at": switch.isoformat(),
            "meters": len(chosen),
            "targets": targets,
            "windows": windows,
        }
        await audit(conn, me, "params.campaign_created", "campaign", name, "params campaign create", details)
        return len(chosen)

    try:
        outcome = _operator_work(dsn, operator, "operator", work)
    except asyncpg.UniqueViolationError:
        fail(f"campaign {name!r} exists already")
    if isinstance(outcome, list):
        for target in outcome:
            shown = (target["address"], target["channel"], target["model"] or "-", target["selected_by"])
            typer.echo("  ".join(shown))
        typer.echo(f"campaign {name} would target {len(outcome)} meters (dry run: nothing created)")
        return
    typer.echo(f"campaign {name} created with {outcome} meters; a different approver approves it")


def _campaign_id(conn_record: asyncpg.Record | None, name: str) -> int:
    if conn_record is None:
        raise ParamError(f"no campaign {name!r}")
    return int(conn_record["id"])


@campaign_app.command("approve")
def campaign_approve(name: str, operator: OperatorId, dsn: Dsn = None) -> None:
    """Approve a draft campaign (an approver other than its creator; audited)."""

    async def work(conn: asyncpg.Connection, me: str) -> None:
        campaign_id = _campaign_id(await campaigns_store.campaign(conn, name), name)
        if not await campaigns_store.approve(conn, campaign_id, me):
            raise ParamError(f"campaign {name!r} is not a draft")
        await audit(conn, me, "params.campaign_approved", "campaign", name, "params campaign approve", {})

    _operator_work(dsn, operator, "approver", work)
    typer.echo(f"campaign {name} approved")


def _move(name: str, operator: str | None, dsn: str | None, state: str, verb: str) -> None:
    async def work(conn: asyncpg.Connection, me: str) -> None:
        campaign_id = _campaign_id(await campaigns_store.campaign(conn, name), name)
        await campaigns_store.move(conn, campaign_id, state)
        await audit(conn, me, f"params.campaign_{state}", "campaign", name, f"params campaign {verb}", {})

    _operator_work(dsn, operator, "operator", work)
    typer.echo(f"campaign {name} {state}")


@campaign_app.command("dry-run")
def campaign_dry_run(name: str, operator: OperatorId, dsn: Dsn = None) -> None:
    """Ask the daemon to read every target's current parameters and record what a write would
    change (nothing is written; `show` gives each meter's finding)."""

    async def work(conn: asyncpg.Connection, me: str) -> None:
        campaign_id = _campaign_id(await campaigns_store.campaign(conn, name), name)
        await campaigns_store.ask_dry_run(conn, campaign_id)
        await audit(conn, me, "params.campaign_dry_run", "campaign", name, "params campaign dry-run", {})

    _operator_work(dsn, operator, "operator", work)
    typer.echo(f"campaign {name}: dry run asked; the daemon reads every meter (see params campaign show)")


@campaign_app.command("start")
def campaign_start(name: str, operator: OperatorId, dsn: Dsn = None) -> None:
    """Start (or resume) an approved campaign: the daemon owning each meter's channel runs it."""
    _move(name, operator, dsn, "running", "start")


@campaign_app.command("resume")
def campaign_resume(name: str, operator: OperatorId, dsn: Dsn = None) -> None:
    """Resume a paused campaign (the same as ``start``)."""
    _move(name, operator, dsn, "running", "resume")


@campaign_app.command("pause")
def campaign_pause(name: str, operator: OperatorId, dsn: Dsn = None) -> None:
    """Pause a running campaign (meters in the middle of an attempt finish it)."""
    _move(name, operator, dsn, "paused", "pause")


@campaign_app.command("cancel")
def campaign_cancel(name: str, operator: OperatorId, dsn: Dsn = None) -> None:
    """Cancel a campaign that is not done (nothing more is sent)."""
    _move(name, operator, dsn, "cancelled", "cancel")


def _campaign_record(found: asyncpg.Record) -> dict[str, Any]:
    return {
        "name": found["name"],
        "state": found["state"],
        "set": f"{found['set_name']}@{found['set_version']}",
        "switch_at": found["switch_at"].isoformat(),
        "max_attempts": found["max_attempts"],
        "windows": list(found["windows"]),
        "targets": json.loads(found["targets"]),
        "created_by": found["created_by"],
        "approved_by": found["approved_by"],
    }


def _shown(dsn: str | None, name: str) -> dict[str, Any]:
    async def work(conn: asyncpg.Connection) -> dict[str, Any] | None:
        found = await campaigns_store.campaign(conn, name)
        if found is None:
            return None
        meters = await campaigns_store.campaign_meters(conn, int(found["id"]))
        listed = [
            dict(m)
            | {
                "dry_run": None if m["dry_run"] is None else json.loads(m["dry_run"]),
                "dry_run_at": None if m["dry_run_at"] is None else m["dry_run_at"].isoformat(),
            }
            for m in meters
        ]
        counts = await campaigns_store.counts(conn, int(found["id"]))
        return _campaign_record(found) | {"counts": counts, "meters": listed}

    shown = run_with_conn(dsn, work)
    if shown is None:
        fail(f"no campaign {name!r}")
    return shown


@campaign_app.command("show")
def campaign_show(
    name: str,
    as_json: Annotated[bool, typer.Option("--json", help="The campaign and each meter, as JSON.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Redraw until the campaign is done.")] = False,
    every: Annotated[float, typer.Option("--every", min=0.2, help="Seconds between redraws.")] = 2.0,
    dsn: Dsn = None,
) -> None:
    """A campaign's progress: meters in each state and a progress bar (``--json``: every meter)."""
    if as_json:
        typer.echo(json.dumps(_shown(dsn, name), indent=2, ensure_ascii=False))
        return
    tty = sys.stdout.isatty()
    last: list[str] = []
    while True:
        shown = _shown(dsn, name)
        lines = progress_lines(name, shown["state"], shown["counts"])
        if lines != last:
            if watch and tty:
                typer.echo("\x1b[H\x1b[2J", nl=False)  # redraw in place on a terminal
            typer.echo("\n".join(lines))
            last = lines
        if not watch or shown["state"] in ("done", "cancelled"):
            return
        time.sleep(every)


@campaign_app.command("list")
def campaign_list(dsn: Dsn = None) -> None:
    """Every campaign with how many meters are in each state, as JSON lines."""
    for found in run_with_conn(dsn, campaigns_store.campaigns):
        typer.echo(json.dumps(_campaign_record(found) | {"meters": json.loads(found["counts"])}))
