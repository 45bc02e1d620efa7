"""``headend meters read|recollect NAME`` and ``headend requests list|show|cancel``: meter requests the
running daemon answers (migration 0054, :mod:`headend.requests.duty`).

``meters read`` / ``meters recollect`` insert a request as the signed-in operator (the database
refuses a role without ``operator`` and a request beyond the ``[requests]`` bounds, in one line),
then wait ``--wait`` seconds on its notifications for the daemon's answer. A request the daemon has
not answered by then stays as it is, to be looked at with ``headend requests show ID`` (exit code 3).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import asyncpg
import typer

from headend import limits
from headend.commands.app import CommandGroup
from headend.commands.auth import Login, OperatorId, login
from headend.commands.common import Dsn, fail, run_with_conn
from headend.commands.timerange import TimeRangeError, time_range
from headend.commands.views import echo_fields, echo_json, echo_table, text
from headend.inventory import InventoryError, find_meter
from headend.operators import OperatorError
from headend.store.meter_requests import (
    FINAL_STATES,
    OPEN_STATES,
    MeterRequest,
    cancel_request,
    create_read_request,
    create_recollect_request,
    get_request,
    list_requests,
    wait_request,
)

requests_app = CommandGroup(help="Meter requests (on-demand reads, re-collections) and their answers.")
WAITING = 3  # exit code: the daemon has not answered within --wait
MAX_WAIT_S = 3600.0

Wait = Annotated[
    float, typer.Option("--wait", help="Seconds to wait for the daemon's answer (0: do not wait).")
]
Json = Annotated[bool, typer.Option("--json", help="Print the request as one JSON object.")]
MeterName = Annotated[str, typer.Argument(help="The meter's name (or its address, or channel/address).")]


class RequestError(Exception):
    """A request that could not be made or looked at: one line."""


def _request_id(value: int) -> int:
    """A request id the database can hold, else one error line."""
    try:
        return limits.db_id(value, "request id")
    except ValueError as exc:
        fail(str(exc))


def _check_wait(wait: float) -> None:
    if not 0 <= wait <= MAX_WAIT_S:
        fail(f"--wait: between 0 and {MAX_WAIT_S:g} s, got {wait:g}", code=2)


def _ask(
    dsn: str | None,
    who: Login,
    name: str,
    wait: float,
    insert: Callable[[asyncpg.Connection, int, str], Awaitable[int]],
) -> MeterRequest:
    """Sign in, insert the request, wait for the answer; the request as it then stands."""

    async def work(conn: asyncpg.Connection) -> MeterRequest:
        operator = await who.sign_in(conn, None)  # the database decides whether the role may ask
        meter_id, _label = await find_meter(conn, name)
        try:
            request_id = await insert(conn, meter_id, operator.id)
        except asyncpg.PostgresError as exc:
            raise RequestError(str(exc).splitlines()[0]) from None
        return await wait_request(conn, request_id, wait)

    try:
        return run_with_conn(dsn, work)
    except (RequestError, InventoryError, OperatorError) as exc:
        fail(str(exc))


def _report(request: MeterRequest, wait: float, as_json: bool) -> None:
    """Print the answer (or the request still waiting); exit non-zero unless it is done."""
    if as_json:
        echo_json(request.to_json())
    elif request.state == "done":
        typer.echo(f"request {request.id} done: {request.reason}")
        if request.result is not None and isinstance(request.result.get("values"), dict):
            values = request.result["values"]
            assert isinstance(values, dict)
            echo_table(
                f"meter {request.meter} at {request.result.get('read_at')}",
                ("quantity", "value"),
                [{"quantity": q, "value": v} for q, v in values.items()],
            )
    if request.state == "done":
        return
    if not request.final:
        fail(
            f"{request.kind} request {request.id} for meter {request.meter} not answered within {wait:g} s"
            f" (still {request.state}; see `headend requests show {request.id}`)",
            code=WAITING,
        )
    fail(f"{request.kind} request {request.id} for meter {request.meter} {request.state}: {request.reason}")


def read(
    name: MeterName,
    operator: OperatorId,
    quantity: Annotated[
        list[str] | None,
        typer.Option("--quantity", "-q", help="A quantity to read (repeat; default: the meter's read plan)."),
    ] = None,
    wait: Wait = 30.0,
    as_json: Json = False,
    dsn: Dsn = None,
) -> None:
    """Read a meter now (点抄) through the running daemon, which stores the values as readings
    (source on_demand) and answers with them. Role operator; bounded per operator and per channel
    ([requests]). Exit 3 if the daemon has not answered within --wait (the request stays)."""
    _check_wait(wait)
    who = login(operator)

    async def insert(conn: asyncpg.Connection, meter_id: int, operator_id: str) -> int:
        return await create_read_request(conn, meter_id, operator_id, quantity or None)

    _report(_ask(dsn, who, name, wait, insert), wait, as_json)


def recollect(
    name: MeterName,
    operator: OperatorId,
    start: Annotated[str, typer.Option("--from", help="Start: a date (local midnight) or an ISO time.")],
    end: Annotated[str, typer.Option("--to", help="End (not included): a date or an ISO time.")],
    timezone: Annotated[str, typer.Option("--timezone", help="Zone of dates and times without offset.")] = (
        "Asia/Shanghai"
    ),
    wait: Wait = 120.0,
    as_json: Json = False,
    dsn: Dsn = None,
) -> None:
    """Re-collect (补抄) the meter's intervals in [--from, --to) that hold no reading, from its load
    profile / daily freezes, through the running daemon; what the meter does not have is marked
    missing. Role operator; at most [requests] max_range_days long. Exit 3 if the daemon has not
    answered within --wait (the request stays)."""
    _check_wait(wait)
    try:
        since, until, _zone = time_range(start, end, timezone)
    except TimeRangeError as exc:
        fail(str(exc), code=2)
    who = login(operator)

    async def insert(conn: asyncpg.Connection, meter_id: int, operator_id: str) -> int:
        return await create_recollect_request(conn, meter_id, operator_id, since, until)

    request = _ask(dsn, who, name, wait, insert)
    if not as_json and request.state == "done":
        echo_fields(
            {"range": f"{text(since)} .. {text(until)}", "filled": request.filled, "missing": request.missing}
        )
    _report(request, wait, as_json)


def _shown(request: MeterRequest) -> dict[str, object]:
    asked = (
        ",".join(request.quantities or ["(read plan)"])
        if request.kind == "read"
        else f"{text(request.range_from)} .. {text(request.range_to)}"
    )
    return {
        "id": request.id,
        "meter": request.meter,
        "kind": request.kind,
        "asked": asked,
        "by": request.requested_by,
        "state": request.state,
        "requested_at": request.requested_at,
        "reason": request.reason,
    }


@requests_app.command("list")
def list_command(
    meter: Annotated[str | None, typer.Option("--meter", help="Only this meter's requests.")] = None,
    state: Annotated[str | None, typer.Option("--state", help="Only requests in this state.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many.")] = 50,
    as_json: Json = False,
    dsn: Dsn = None,
) -> None:
    """The newest meter requests first, with their state and reason."""
    states = (*OPEN_STATES, *sorted(FINAL_STATES))
    if state is not None and state not in states:
        fail(f"--state: one of {', '.join(states)}, got {state!r}", code=2)

    async def work(conn: asyncpg.Connection) -> list[MeterRequest]:
        meter_id = None if meter is None else (await find_meter(conn, meter))[0]
        return await list_requests(conn, meter_id=meter_id, state=state, limit=limit)

    try:
        found = run_with_conn(dsn, work)
    except InventoryError as exc:
        fail(str(exc))
    if as_json:
        echo_json([r.to_json() for r in found])
        return
    echo_table(
        "meter requests",
        ("id", "meter", "kind", "asked", "by", "state", "requested_at", "reason"),
        [_shown(r) for r in found],
    )


@requests_app.command("show")
def show_command(
    request_id: Annotated[int, typer.Argument(help="The request's id.")],
    as_json: Json = False,
    dsn: Dsn = None,
) -> None:
    """One meter request: what was asked, by whom, its state, reason and result."""
    request_id = _request_id(request_id)
    found = run_with_conn(dsn, lambda conn: get_request(conn, request_id))
    if found is None:
        fail(f"no meter request {request_id}")
    if as_json:
        echo_json(found.to_json())
        return
    fields: dict[str, object] = {**_shown(found), "channel": found.channel, "expires_at": found.expires_at}
    fields |= {"started_at": found.started_at, "finished_at": found.finished_at}
    if found.kind == "recollect":
        fields |= {"filled": found.filled, "missing": found.missing}
    echo_fields({k: text(v) for k, v in fields.items()})
    values = (found.result or {}).get("values")
    if isinstance(values, dict):
        echo_table("values", ("quantity", "value"), [{"quantity": q, "value": v} for q, v in values.items()])


@requests_app.command("cancel")
def cancel_command(
    request_id: Annotated[int, typer.Argument(help="The request's id.")],
    operator: OperatorId,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")] = "cancelled",
    dsn: Dsn = None,
) -> None:
    """Cancel a request the daemon has not taken yet (its requester, or an admin)."""
    request_id = _request_id(request_id)
    who = login(operator)

    async def work(conn: asyncpg.Connection) -> str:
        await who.sign_in(conn, None)
        try:
            if await cancel_request(conn, request_id, reason):
                return ""
        except asyncpg.PostgresError as exc:
            return str(exc).splitlines()[0]
        found = await get_request(conn, request_id)
        return f"no meter request {request_id}" if found is None else f"request {request_id} is {found.state}"

    try:
        refused = run_with_conn(dsn, work)
    except OperatorError as exc:
        fail(str(exc))
    if refused:
        fail(refused)
    typer.echo(f"request {request_id} cancelled")


def register(app: typer.Typer) -> None:
    """Attach ``headend requests`` (its ``read`` and ``recollect`` are ``headend meters``' commands)."""
    app.add_typer(requests_app, name="requests")
