"""``headend exceptions``: list and show what the daemon's rules found; acknowledge, dispatch and resolve
it as a signed-in operator (each step a compare-and-set the database checks and audits)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated

import asyncpg
import typer

from headend.commands.app import CommandGroup
from headend.commands.auth import OperatorId, login
from headend.commands.common import Dsn, fail, run_with_conn
from headend.commands.views import echo_fields, echo_json, echo_table
from headend.config import parse_duration
from headend.operators import OperatorError
from headend.store.audit import audit_trail
from headend.store.exceptions import acknowledge, dispatch, list_exceptions, one_exception, resolve
from headend.store.lineloss import area_exists
from headend.vocabulary import EXCEPTION_RULES, EXCEPTION_STATES

exceptions_app = CommandGroup(
    help="Exceptions the daemon's rules found: list, show, acknowledge, dispatch, resolve.",
    no_args_is_help=True,
)
COLUMNS = ("id", "rule", "meter", "area", "state", "count", "first_seen", "last_seen")
FIELDS = (
    *COLUMNS,
    *("evidence", "clear_since", "acknowledged_by", "acknowledged_at", "dispatched_to"),
    *("dispatched_by", "dispatched_at", "resolved_by", "note", "closed_at"),
)


def _as_dict(record: asyncpg.Record) -> dict[str, object]:
    out = {key: record[key] for key in FIELDS}
    out["evidence"] = json.loads(record["evidence"])
    return out


@exceptions_app.command("list")
def list_(
    rule: Annotated[str | None, typer.Option("--rule", help="Only this rule.")] = None,
    area: Annotated[
        str | None, typer.Option("--area", help="Only this transformer area (its own and its meters').")
    ] = None,
    state: Annotated[
        list[str] | None,
        typer.Option(
            "--state", help="Only this state (repeatable); default: open, acknowledged, dispatched."
        ),
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="Only those first seen longer ago than this, e.g. 2h, 3d."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    dsn: Dsn = None,
) -> None:
    """Exceptions, oldest first (the active ones unless --state says otherwise)."""
    if rule is not None and rule not in EXCEPTION_RULES:
        fail(f"--rule {rule!r}: one of {', '.join(EXCEPTION_RULES)}", code=2)
    states = state or ["open", "acknowledged", "dispatched"]
    for name in states:
        if name not in EXCEPTION_STATES:
            fail(f"--state {name!r}: one of {', '.join(EXCEPTION_STATES)}", code=2)
    before = None
    if older_than is not None:
        try:
            before = datetime.now(UTC) - timedelta(seconds=parse_duration(older_than))
        except ValueError as exc:
            fail(f"--older-than: {exc}", code=2)

    async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
        if area is not None and not await area_exists(conn, area):
            fail(f"no area named {area!r}")
        return await list_exceptions(conn, rule=rule, area=area, states=states, seen_before=before)

    found = run_with_conn(dsn, work)
    if as_json:
        echo_json([_as_dict(r) for r in found])
        return
    echo_table(f"{len(found)} exception(s)", COLUMNS, [dict(r) for r in found])


@exceptions_app.command("show")
def show(
    exception_id: Annotated[int, typer.Argument(help="The exception's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    dsn: Dsn = None,
) -> None:
    """One exception: what was found (the evidence), its state, who did what, and its audit trail."""

    async def work(conn: asyncpg.Connection) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
        found = await one_exception(conn, exception_id)
        if found is None:
            fail(f"no exception {exception_id}")
        return found, await audit_trail(conn, "exception", exception_id)

    found, trail = run_with_conn(dsn, work)
    if as_json:
        echo_json({**_as_dict(found), "trail": [dict(t) for t in trail]})
        return
    echo_fields(
        {k: v for k, v in _as_dict(found).items() if k != "evidence"} | {"evidence": found["evidence"]}
    )
    echo_table("trail", ("at", "actor", "action", "reason"), [dict(t) for t in trail])


def _transition(
    operator: str,
    dsn: str | None,
    exception_id: int,
    step: Callable[[asyncpg.Connection, str], Awaitable[bool]],
    done: str,
) -> None:
    """Sign in, try the compare-and-set ``step``; say what happened or, if the exception was not where
    the step starts, where it is."""
    signed = login(operator)

    async def work(conn: asyncpg.Connection) -> str:
        await signed.sign_in(conn, None)
        found = await one_exception(conn, exception_id)
        if found is None:
            fail(f"no exception {exception_id}")
        if not await step(conn, signed.operator_id):
            now = await one_exception(conn, exception_id)
            fail(f"exception {exception_id} is {now['state'] if now else 'gone'}: not {done} now")
        return found["rule"]

    try:
        rule = run_with_conn(dsn, work)
    except (OperatorError, asyncpg.InsufficientPrivilegeError) as exc:
        fail(str(exc))
    typer.echo(f"exception {exception_id} ({rule}) {done}")


@exceptions_app.command("ack")
def ack(
    exception_id: Annotated[int, typer.Argument(help="The exception's id.")],
    operator: OperatorId,
    dsn: Dsn = None,
) -> None:
    """Acknowledge an open exception (an operator or admin)."""
    _transition(operator, dsn, exception_id, lambda c, me: acknowledge(c, exception_id, me), "acknowledged")


@exceptions_app.command("dispatch")
def dispatch_(
    exception_id: Annotated[int, typer.Argument(help="The exception's id.")],
    to: Annotated[str, typer.Option("--to", help="The person or crew sent to deal with it.")],
    operator: OperatorId,
    dsn: Dsn = None,
) -> None:
    """Dispatch an acknowledged exception to a named person or crew (派工)."""
    if not to.strip():
        fail("--to: name the person or crew", code=2)
    _transition(
        operator,
        dsn,
        exception_id,
        lambda c, me: dispatch(c, exception_id, me, to.strip()),
        f"dispatched to {to}",
    )


@exceptions_app.command("resolve")
def resolve_(
    exception_id: Annotated[int, typer.Argument(help="The exception's id.")],
    note: Annotated[str, typer.Option("--note", help="What was found and done (required).")],
    operator: OperatorId,
    dsn: Dsn = None,
) -> None:
    """Resolve an acknowledged or dispatched exception with a note."""
    if not note.strip():
        fail("--note: say what was found and done", code=2)
    _transition(
        operator, dsn, exception_id, lambda c, me: resolve(c, exception_id, me, note.strip()), "resolved"
    )


def register(app: typer.Typer) -> None:
    """Attach ``headend exceptions``."""
    app.add_typer(exceptions_app, name="exceptions")
