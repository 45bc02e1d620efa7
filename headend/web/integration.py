"""The integration API for a billing / CIS system (``/api/v1``): a meter's readings and daily
registers and the fleet's daily registers (paged by a keyset cursor; JSON, or CSV with
``Accept: text/csv`` or a ``.csv`` path), a payment batch, relay command requests and their outcome.
A client signs in with a scoped API token (``Authorization: Bearer``); each endpoint needs its scope
and the role behind it, and every write runs under the token's operator in the database."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, ValidationError

from headend.web import actions, data, feeds
from headend.web.deps import Reader, ReaderOnce, Signed, SignedOnce
from headend.web.feeds import Page
from headend.web.identity import CSRF_HEADER
from headend.web.payment_import import COLUMNS, MAX_ROWS, PaymentRow, RowOutcome, record_batch, rows_of_csv
from headend.web.schemas import CommandOut

router = APIRouter(prefix="/api/v1", tags=["integration"])
MeterRef = Annotated[str, Path(max_length=100, description="The meter's address (or name).")]
Cursor = Annotated[str | None, Query(max_length=500, description="The `next` of the previous page (opaque).")]
Limit = Annotated[int, Query(ge=1, le=10000, description="Rows (readings) or meters (daily) a page.")]
Quantity = Annotated[str, Query(max_length=100, description="Which register.")]
Day = Annotated[str | None, Query(max_length=20)]
MAX_BODY = 1 << 20
CSV = "text/csv; charset=utf-8"
PAGED: dict[int | str, dict[str, object]] = {
    200: {
        "description": "A page: JSON `{next, columns, rows}`, or CSV (`text/csv`) with the next page's"
        " cursor in `X-Next-Cursor` (absent on the last page).",
        "content": {"text/csv": {}},
    }
}


def _wants_csv(request: Request, suffix: bool) -> bool:
    return suffix or "text/csv" in request.headers.get("accept", "")


def _send(request: Request, page: Page, csv: bool) -> Response:
    headers = {} if page.next is None else {"x-next-cursor": page.next}
    if page.next is not None:
        nxt = request.url.include_query_params(cursor=page.next)
        headers["link"] = f'<{nxt.path}?{nxt.query}>; rel="next"'
    if csv:
        return StreamingResponse(feeds.as_csv(page), media_type=CSV, headers=headers)
    return StreamingResponse(feeds.as_json(page), media_type="application/json", headers=headers)


async def _readings(
    request: Request,
    signed: SignedOnce,
    conn: ReaderOnce,
    ref: str,
    start: str | None,
    end: str | None,
    quantity: str,
    cursor: str | None,
    limit: int,
    csv: bool,
) -> Response:
    signed.who.require_scope("readings:read")
    first, last = feeds.days(start, end)
    page = await feeds.interval_page(conn, ref, first, last, quantity, cursor, limit, signed.console.zone)
    return _send(request, page, _wants_csv(request, csv))


@router.get("/meters/{address}/readings", responses=PAGED)
async def meter_readings(
    request: Request,
    address: MeterRef,
    signed: SignedOnce,
    conn: ReaderOnce,
    start: Annotated[str | None, Query(alias="from", max_length=20, description="First local day.")] = None,
    end: Annotated[str | None, Query(alias="to", max_length=20, description="Day after the last.")] = None,
    quantity: Quantity = "energy_import_kwh",
    cursor: Cursor = None,
    limit: Limit = 1000,
) -> Response:
    """The meter's stored interval readings of the local days [from, to), by time, × its multiplier,
    with their quality (as ``headend export readings --intervals``); scope ``readings:read``."""
    return await _readings(request, signed, conn, address, start, end, quantity, cursor, limit, False)


@router.get("/meters/{address}/readings.csv", responses=PAGED, include_in_schema=False)
async def meter_readings_csv(
    request: Request,
    address: MeterRef,
    signed: SignedOnce,
    conn: ReaderOnce,
    start: Annotated[str | None, Query(alias="from", max_length=20)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=20)] = None,
    quantity: Quantity = "energy_import_kwh",
    cursor: Cursor = None,
    limit: Limit = 1000,
) -> Response:
    return await _readings(request, signed, conn, address, start, end, quantity, cursor, limit, True)


async def _meter_daily(
    request: Request,
    signed: SignedOnce,
    conn: ReaderOnce,
    ref: str,
    start: str | None,
    end: str | None,
    quantity: str,
    csv: bool,
) -> Response:
    signed.who.require_scope("readings:read")
    first, last = feeds.days(start, end)
    zone = signed.console.zone
    page = await feeds.meter_daily(conn, ref, first, last, quantity, zone)
    return _send(request, page, _wants_csv(request, csv))


@router.get("/meters/{address}/daily", responses=PAGED)
async def meter_daily(
    request: Request,
    address: MeterRef,
    signed: SignedOnce,
    conn: ReaderOnce,
    start: Annotated[str | None, Query(alias="from", max_length=20, description="First local day.")] = None,
    end: Annotated[str | None, Query(alias="to", max_length=20, description="Day after the last.")] = None,
    quantity: Quantity = "energy_import_kwh",
) -> Response:
    """The meter's daily registers of the local days [from, to): the register at each local midnight
    and the day's consumption, × its multiplier, with quality flags (valid, estimated, suspect,
    missing), as ``headend export readings``; scope ``readings:read``."""
    return await _meter_daily(request, signed, conn, address, start, end, quantity, False)


@router.get("/meters/{address}/daily.csv", include_in_schema=False)
async def meter_daily_csv(
    request: Request,
    address: MeterRef,
    signed: SignedOnce,
    conn: ReaderOnce,
    start: Annotated[str | None, Query(alias="from", max_length=20)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=20)] = None,
    quantity: Quantity = "energy_import_kwh",
) -> Response:
    return await _meter_daily(request, signed, conn, address, start, end, quantity, True)


async def _fleet(
    request: Request,
    signed: SignedOnce,
    conn: ReaderOnce,
    day: str | None,
    quantity: str,
    cursor: str | None,
    limit: int,
    csv: bool,
) -> Response:
    signed.who.require_scope("readings:read")
    zone = signed.console.zone
    page = await feeds.fleet_daily(conn, feeds.day_of(day), quantity, cursor, limit, zone)
    return _send(request, page, _wants_csv(request, csv))


@router.get("/daily", responses=PAGED)
async def fleet_daily(
    request: Request,
    signed: SignedOnce,
    conn: ReaderOnce,
    day: Annotated[str | None, Query(alias="date", max_length=20, description="The local day.")] = None,
    quantity: Quantity = "energy_import_kwh",
    cursor: Cursor = None,
    limit: Limit = 1000,
) -> Response:
    """Every meter's daily register of one local day (the register at its opening midnight and the
    day's consumption), by meter, ``limit`` meters a page; scope ``readings:read``."""
    return await _fleet(request, signed, conn, day, quantity, cursor, limit, False)


@router.get("/daily.csv", include_in_schema=False)
async def fleet_daily_csv(
    request: Request,
    signed: SignedOnce,
    conn: ReaderOnce,
    day: Annotated[str | None, Query(alias="date", max_length=20)] = None,
    quantity: Quantity = "energy_import_kwh",
    cursor: Cursor = None,
    limit: Limit = 1000,
) -> Response:
    return await _fleet(request, signed, conn, day, quantity, cursor, limit, True)


class PaymentIn(BaseModel):
    """One payment of a batch."""

    account: str = Field(min_length=1, max_length=100)
    amount: str = Field(min_length=1, max_length=20, description="Decimal text, e.g. 120.50.")
    reference: str = Field(
        min_length=1, max_length=200, description="Recorded once: a retry changes nothing."
    )
    paid_at: str | None = Field(None, max_length=40, description="ISO 8601; without an offset: station time.")


class PaymentBatch(BaseModel):
    """A batch of payments (also accepted as CSV: ``account,amount,reference,paid_at``)."""

    payments: list[PaymentIn] = Field(min_length=1, max_length=MAX_ROWS)


class PaymentResult(BaseModel):
    """A row's outcome: ``recorded``, ``duplicate`` (recorded before: nothing changed) or ``refused``
    with the reason (nothing changed)."""

    row: int
    account: str
    reference: str
    status: Literal["recorded", "duplicate", "refused"]
    reason: str | None
    balance: str | None


class PaymentResults(BaseModel):
    """Every row's outcome, in the batch's order, and how many of each."""

    results: list[PaymentResult]
    recorded: int
    duplicate: int
    refused: int


def _inlined(node: object, defs: dict[str, object]) -> object:
    """A JSON schema with its ``$defs`` references written in place (an OpenAPI request body given by
    hand cannot point into the model's own ``$defs``)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            return _inlined(defs[ref.rsplit("/", 1)[-1]], defs)
        return {k: _inlined(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inlined(v, defs) for v in node]
    return node


_BATCH_SCHEMA = PaymentBatch.model_json_schema()
BATCH_BODY: dict[str, object] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inlined(_BATCH_SCHEMA, _BATCH_SCHEMA.get("$defs", {}))},
            "text/csv": {"schema": {"type": "string", "description": ",".join(COLUMNS) + " with a header"}},
        },
    }
}


async def _batch(request: Request) -> list[PaymentRow]:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise data.BadRequest(f"a batch is at most {MAX_BODY} bytes")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise data.BadRequest("the batch is not UTF-8 text") from None
    if request.headers.get("content-type", "").startswith("text/csv"):
        return rows_of_csv(text)
    try:
        batch = PaymentBatch.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise data.BadRequest(f"{where or 'body'}: {first['msg']}") from None
    return [PaymentRow(p.account, p.amount, p.reference, p.paid_at) for p in batch.payments]


@router.post("/payments", response_model=PaymentResults, openapi_extra=BATCH_BODY)
async def import_payments(request: Request, signed: Signed) -> PaymentResults:
    """Record a batch of payments (scope ``payments:write``, cashier role), each once per reference
    and audited under the token's operator; a retried batch records nothing twice, and a reference
    reused with another amount is refused for that row with the reason."""
    signed.who.require_scope("payments:write")
    signed.who.check_csrf(request.headers.get(CSRF_HEADER))
    signed.who.require("cashier")
    outcomes = await record_batch(signed.conn, signed.who, await _batch(request), signed.console.zone)
    return PaymentResults(
        results=[_result(o) for o in outcomes],
        recorded=sum(o.status == "recorded" for o in outcomes),
        duplicate=sum(o.status == "duplicate" for o in outcomes),
        refused=sum(o.status == "refused" for o in outcomes),
    )


def _result(outcome: RowOutcome) -> PaymentResult:
    return PaymentResult(**{name: getattr(outcome, name) for name in outcome.__slots__})


class CommandIn(BaseModel):
    """A relay command requested for one meter."""

    meter: str = Field(min_length=1, max_length=100, description="The meter's address (or name).")
    action: Literal["disconnect", "reconnect"]
    reason: str = Field(min_length=1, max_length=500, description="Why (kept in the audit log).")


class CommandCreated(BaseModel):
    """The command persisted: follow it at ``/api/v1/commands/{id}``; it waits for a second
    operator's approval when ``awaiting_approval``."""

    id: int
    awaiting_approval: bool


@router.post("/commands", response_model=CommandCreated, status_code=201)
async def request_command(request: Request, body: CommandIn, signed: Signed) -> CommandCreated:
    """Request a disconnect or reconnect (scope ``commands:write``, operator role) through the same
    service as the console and the CLI: a persisted command the daemon executes under its gates and
    confirms by reading the relay back, after an approver other than the requester approved it."""
    signed.who.require_scope("commands:write")
    signed.who.check_csrf(request.headers.get(CSRF_HEADER))
    command_id, waits = await actions.create_command(
        signed.conn, signed.who, body.meter, body.action, body.reason
    )
    return CommandCreated(id=command_id, awaiting_approval=waits)


@router.get("/commands/{command_id}", response_model=CommandOut)
async def command_outcome(
    command_id: Annotated[int, Path(ge=1, le=2**63 - 1)], signed: Signed, conn: Reader
) -> data.Row:
    """A command's state, approval, read-back evidence and audit trail (scope ``commands:read``)."""
    signed.who.require_scope("commands:read")
    return await data.command(conn, command_id)
