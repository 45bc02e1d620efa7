"""``headend params set``: time-of-use parameter sets (add, from a tariff, show, list, diff)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import typer

from headend.billing.tariff import TariffError, slots_from
from headend.commands.app import CommandGroup
from headend.commands.auth import OperatorId, login
from headend.commands.common import Dsn, fail, run_with_conn
from headend.operators import OperatorError
from headend.params.from_tariff import set_from_slots
from headend.params.tou import ParamError, TouSet, item_diff, parse_set
from headend.store.audit import audit
from headend.store.param_sets import add_version, latest_versions, set_version
from headend.store.tariffs import revisions, tariff_by_name
from protocols.dlt645 import lookup

params_app = CommandGroup(
    help="Meter parameters from the master station (time of use).", no_args_is_help=True
)
set_app = CommandGroup(
    help="Time-of-use parameter sets: seasons, daily tables, holidays, rest days (versioned).",
    no_args_is_help=True,
)
params_app.add_typer(set_app, name="set")


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
