"""The JSON API: the same data as the pages, and the same writes. A client authenticates with the
session cookie (then each write carries the session's CSRF token in ``X-CSRF-Token``) or with
``Authorization: Bearer <token>`` (a ``headend operators token``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query
from pydantic import BaseModel, Field

from headend.web import actions, data, operator_admin
from headend.web.deps import Reader, Signed
from headend.web.identity import CSRF_HEADER
from headend.web.schemas import (
    AccountOut,
    AccountsOut,
    AuditOut,
    ChannelOut,
    ChannelsOut,
    CommandOut,
    CommandsOut,
    MeterOut,
    MeterRequestOut,
    OverviewOut,
)

router = APIRouter(prefix="/api")
CommandId = Annotated[int, Path(ge=1, le=2**63 - 1)]
RequestId = Annotated[int, Path(ge=1, le=2**63 - 1)]
CsrfHeader = Annotated[str | None, Header(alias=CSRF_HEADER)]
Json = dict[str, object]


class Me(BaseModel):
    """The signed-in operator."""

    operator_id: str
    roles: list[str]
    csrf: str | None = Field(description="Send as X-CSRF-Token with every write signed by the cookie.")


class CommandRequest(BaseModel):
    """A manual relay command for one meter."""

    meter: str = Field(min_length=1, max_length=100, description="Meter name or address.")
    action: Literal["disconnect", "reconnect"]
    reason: str = Field(min_length=1, max_length=500, description="Why (kept in the audit log).")


class CancelRequest(BaseModel):
    """Why a pending command is cancelled."""

    reason: str = Field(min_length=1, max_length=500)


class Created(BaseModel):
    """A command created: its id, and whether it waits for a second operator's approval."""

    id: int
    awaiting_approval: bool


class Done(BaseModel):
    """A command after an approval or a cancellation."""

    id: int
    state: str


@router.get("/me", response_model=Me)
async def me(signed: Signed) -> Me:
    """Who the request acts for."""
    return Me(operator_id=signed.who.operator_id, roles=list(signed.who.roles), csrf=signed.who.csrf)


@router.get("/overview", response_model=OverviewOut)
async def overview(signed: Signed) -> Json:
    """Collection success today per channel, meters not read today with why, fee-control state."""
    return await signed.console.overview()


class RecollectRequest(BaseModel):
    """A range of a meter's intervals to re-collect: [since, until)."""

    since: datetime
    until: datetime


class Asked(BaseModel):
    """A meter request made: its id (follow it at ``/api/requests/{id}``)."""

    id: int


@router.post("/meters/{name:path}/read", response_model=Asked, status_code=201)
async def read_now(name: str, signed: Signed, csrf: CsrfHeader = None) -> Asked:
    """Read the meter now (点抄; operator role): the daemon owning its channel answers at once and stores
    the values as readings. Bounded per operator and per channel by the database."""
    signed.who.check_csrf(csrf)
    return Asked(id=await actions.ask_read(signed.conn, signed.who, name))


@router.post("/meters/{name:path}/recollect", response_model=Asked, status_code=201)
async def recollect(name: str, body: RecollectRequest, signed: Signed, csrf: CsrfHeader = None) -> Asked:
    """Re-collect (补抄) the meter's empty intervals in [since, until) from its memory (operator role)."""
    signed.who.check_csrf(csrf)
    return Asked(id=await actions.ask_recollect(signed.conn, signed.who, name, body.since, body.until))


@router.get("/requests/{request_id}", response_model=MeterRequestOut)
async def meter_request(request_id: RequestId, signed: Signed, conn: Reader) -> Json:
    """A meter request with the daemon's answer once it came (``request.final``), or why it failed."""
    return await data.meter_request(conn, request_id)


@router.get("/meters/{name:path}", response_model=MeterOut)
async def meter(
    name: str,
    signed: Signed,
    conn: Reader,
    day: Annotated[str | None, Query(max_length=20)] = None,
    period: Annotated[Literal["day", "week", "month"], Query()] = "day",
) -> Json:
    """A meter: identity, latest readings with quality, relay, clock offset, the day's load curve (one
    entry per reading), consumption per day, week or month (``period``) up to the day, events and
    commands."""
    zone = signed.console.zone
    page = await data.meter(conn, name, data.parse_day(day, zone), zone, period)
    return page.data


@router.get("/commands", response_model=CommandsOut)
async def commands(
    signed: Signed,
    conn: Reader,
    state: Annotated[str | None, Query(max_length=20)] = None,
    meter: Annotated[str | None, Query(max_length=100)] = None,
) -> Json:
    """Commands, newest first, optionally of one state and one meter."""
    return await data.commands(conn, state or None, (meter or "").strip() or None)


@router.get("/commands/{command_id}", response_model=CommandOut)
async def command(command_id: CommandId, signed: Signed, conn: Reader) -> Json:
    """One command with its read-back evidence, its approval and its audit trail."""
    return await data.command(conn, command_id)


@router.post("/commands", response_model=Created, status_code=201)
async def create_command(body: CommandRequest, signed: Signed, csrf: CsrfHeader = None) -> Created:
    """Ask the daemon to switch a meter (operator role): a persisted command it executes under its
    gates and confirms by reading the relay back."""
    signed.who.check_csrf(csrf)
    command_id, waits = await actions.create_command(
        signed.conn, signed.who, body.meter, body.action, body.reason
    )
    return Created(id=command_id, awaiting_approval=waits)


@router.post("/commands/{command_id}/approve", response_model=Done)
async def approve(command_id: CommandId, signed: Signed, csrf: CsrfHeader = None) -> Done:
    """Approve as the second operator (approver role; not the command's creator)."""
    signed.who.check_csrf(csrf)
    await actions.approve_command(signed.conn, signed.who, command_id)
    return Done(id=command_id, state="pending")


@router.post("/commands/{command_id}/cancel", response_model=Done)
async def cancel(command_id: CommandId, body: CancelRequest, signed: Signed, csrf: CsrfHeader = None) -> Done:
    """Cancel a pending command with a reason (operator role)."""
    signed.who.check_csrf(csrf)
    await actions.cancel(signed.conn, signed.who, command_id, body.reason)
    return Done(id=command_id, state="cancelled")


class PaymentRequest(BaseModel):
    """A payment to record: the amount (decimal text, two places at most) and its reference."""

    amount: str = Field(min_length=1, max_length=20, description="e.g. 120.50")
    reference: str = Field(
        min_length=1, max_length=200, description="Recorded once: a retry changes nothing."
    )


class PaymentDone(BaseModel):
    """The payment's outcome: ``recorded`` is False when its reference was already recorded."""

    account: str
    reference: str
    recorded: bool
    balance: str


@router.get("/accounts", response_model=AccountsOut)
async def accounts(signed: Signed, conn: Reader) -> Json:
    """Every account's balance and arrears state, and the arrears list."""
    return await data.accounts(conn)


@router.get("/accounts/{number}", response_model=AccountOut)
async def account(
    number: str,
    signed: Signed,
    conn: Reader,
    start: Annotated[str | None, Query(alias="from", max_length=20)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=20)] = None,
) -> Json:
    """An account: settings, balance, the ledger of local days [from, to] (default: the last 90 days)
    with the running balance, the period's bills, the newest payments."""
    first, last = data.period(start, end, signed.console.zone)
    return await data.account(conn, number, first, last, signed.console.zone)


@router.post("/accounts/{number}/payments", response_model=PaymentDone, status_code=201)
async def pay(number: str, body: PaymentRequest, signed: Signed, csrf: CsrfHeader = None) -> PaymentDone:
    """Record a payment (cashier role), once per reference, as ``headend billing pay`` does."""
    signed.who.check_csrf(csrf)
    done = await actions.record_payment(signed.conn, signed.who, number, body.amount, body.reference)
    return PaymentDone(
        account=done.account, reference=done.reference, recorded=done.recorded, balance=str(done.balance)
    )


@router.get("/channels", response_model=ChannelsOut)
async def channels(signed: Signed, conn: Reader) -> Json:
    """Every channel's health, and the dial-in devices pending adoption."""
    return await data.channels(conn)


@router.get("/channels/{name}", response_model=ChannelOut)
async def channel(name: str, signed: Signed, conn: Reader) -> Json:
    """One channel: last contact, success and utilisation of its last read cycles, meters, line
    errors, quarantined meters."""
    return await data.channel(conn, name)


@router.get("/audit", response_model=AuditOut)
async def audit(
    signed: Signed,
    conn: Reader,
    operator: Annotated[str | None, Query(max_length=20)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    meter: Annotated[str | None, Query(max_length=100)] = None,
    start: Annotated[str | None, Query(alias="from", max_length=20)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> Json:
    """The audit log, newest first: filter by operator, action (or a prefix such as ``command.``),
    meter (its own entries and its commands'), local days [from, to]. Every entry: ``/audit.csv``."""
    which = await data.audit_filter(conn, operator, action, meter, start, end, signed.console.zone)
    return await data.audit(conn, which, limit)


class OperatorListed(BaseModel):
    """An operator (never the password hash)."""

    id: str
    name: str
    roles: list[str]
    active: bool
    created_by: str
    created_at: datetime
    failed_sign_ins: int
    locked_until: datetime | None


class NewOperator(BaseModel):
    """An operator to add; a blank password is generated and returned once."""

    id: str = Field(min_length=1, max_length=20, description="工号, 1-8 digits.")
    name: str = Field(min_length=1, max_length=200)
    roles: list[Literal["viewer", "operator", "approver", "cashier", "admin"]] = Field(min_length=1)
    password: str = Field(default="", max_length=200)


class ActiveChange(BaseModel):
    """Enable or disable an operator, with a reason (audited)."""

    active: bool
    reason: str = Field(min_length=1, max_length=500)


class NewPassword(BaseModel):
    """A password to set; blank: one is generated and returned once."""

    password: str = Field(default="", max_length=200)


class Secret(BaseModel):
    """The operator changed, and the generated password (shown this once) when none was given."""

    id: str
    password: str | None


OperatorPath = Annotated[str, Path(max_length=20)]


@router.get("/operators", response_model=list[OperatorListed])
async def list_operators(signed: Signed) -> list[OperatorListed]:
    """Every operator (admin role)."""
    found = await operator_admin.operators(signed.conn, signed.who)
    return [OperatorListed(**{name: getattr(r, name) for name in r.__slots__}) for r in found]


@router.post("/operators", response_model=Secret, status_code=201)
async def add_operator(body: NewOperator, signed: Signed, csrf: CsrfHeader = None) -> Secret:
    """Add an operator (admin role), as ``headend operators add``."""
    signed.who.check_csrf(csrf)
    shown = await operator_admin.add(
        signed.conn, signed.who, body.id, body.name, ",".join(body.roles), body.password
    )
    return Secret(id=body.id, password=shown)


@router.post("/operators/{operator_id}/active", response_model=Secret)
async def set_active(
    operator_id: OperatorPath, body: ActiveChange, signed: Signed, csrf: CsrfHeader = None
) -> Secret:
    """Enable or disable an operator (admin role), as ``headend operators enable|disable``."""
    signed.who.check_csrf(csrf)
    await operator_admin.set_active(signed.conn, signed.who, operator_id, body.active, body.reason)
    return Secret(id=operator_id, password=None)


@router.post("/operators/{operator_id}/password", response_model=Secret)
async def reset_password(
    operator_id: OperatorPath, body: NewPassword, signed: Signed, csrf: CsrfHeader = None
) -> Secret:
    """Set another operator's password (admin role), as ``headend operators passwd``."""
    signed.who.check_csrf(csrf)
    shown = await operator_admin.reset_password(signed.conn, signed.who, operator_id, body.password)
    return Secret(id=operator_id, password=shown)
