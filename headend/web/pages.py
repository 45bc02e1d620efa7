"""The HTML pages: sign-in and sign-out, overview, meter, commands; every form post carries the
session's CSRF token and every write needs its role (the database checks it again)."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Path, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from headend.operators import OperatorError, authenticate
from headend.store import web_sessions
from headend.web import actions, data, operator_admin
from headend.web.app import console_of
from headend.web.deps import Reader, Signed, SignedOnce
from headend.web.export import audit_csv
from headend.web.i18n import LANGUAGES
from headend.web.identity import (
    CSRF_FIELD,
    LANG_COOKIE,
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    digest,
    new_session_id,
    unbound_after,
)
from headend.web.svg import daily_bars, load_curve

router = APIRouter(include_in_schema=False)
CommandId = Annotated[int, Path(ge=1, le=2**63 - 1)]
RequestId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Csrf = Annotated[str, Form(alias=CSRF_FIELD)]


def _back(to: str) -> RedirectResponse:
    return RedirectResponse(to, status_code=303)


def _signin_form(request: Request, status: int = 200, error: str | None = None) -> Response:
    token = secrets.token_urlsafe(24)
    console = console_of(request)
    response = console.page(request, "signin.html", None, {"signin": token, "error": error}, status)
    response.set_cookie(
        SIGNIN_COOKIE,
        token,
        max_age=900,
        httponly=True,
        samesite="strict",
        secure=console.config.secure_cookies,
        path="/signin",
    )
    return response


@router.get("/signin")
async def signin_page(request: Request) -> Response:
    return _signin_form(request)


@router.post("/signin")
async def signin(
    request: Request,
    operator: Annotated[str, Form()],
    password: Annotated[str, Form()],
    signin: Annotated[str, Form()],
) -> Response:
    console = console_of(request)
    expected = request.cookies.get(SIGNIN_COOKIE) or ""
    if not expected or not secrets.compare_digest(expected, signin):
        return _signin_form(request, 403, "the sign-in form expired: try again")
    session_id = new_session_id()
    async with console.desk.acquire() as conn, unbound_after(conn):
        try:
            await authenticate(conn, operator, password, None)
        except OperatorError as exc:
            return _signin_form(request, 401, str(exc))
        idle = timedelta(seconds=console.config.session_idle)
        await web_sessions.start(
            conn, digest(session_id), idle, timedelta(seconds=console.config.session_max)
        )
    response = _back("/")
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=int(console.config.session_max),
        httponly=True,
        samesite="strict",
        secure=console.config.secure_cookies,
        path="/",
    )
    response.delete_cookie(SIGNIN_COOKIE, path="/signin")
    return response


@router.post("/signout")
async def signout(request: Request, me: Signed, csrf: Csrf = "") -> Response:
    me.who.check_csrf(csrf)
    cookie = request.cookies.get(SESSION_COOKIE) or ""
    await web_sessions.end(me.conn, digest(cookie))
    response = _back("/signin")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/lang/{language}")
async def choose_language(language: str, next: str = "/") -> Response:
    if language not in LANGUAGES:
        language = LANGUAGES[0]
    local = next.startswith("/") and next[1:2] not in ("/", "\\") and "\n" not in next and "\r" not in next
    target = next if local else "/"  # back to a page of the console, never to another host
    response = _back(target)
    response.set_cookie(LANG_COOKIE, language, max_age=365 * 86400, samesite="strict", path="/")
    return response


@router.get("/")
async def overview_page(request: Request, me: Signed) -> Response:
    found = await me.console.overview()
    return me.console.page(request, "overview.html", me.who, found)


@router.get("/meters")
async def find_meter_page(name: Annotated[str, Query(max_length=100)], me: Signed) -> Response:
    return _back("/meters/" + quote(name.strip(), safe=""))


@router.post("/meters/{name:path}/read")
async def read_meter_now(name: str, me: Signed, csrf: Csrf = "") -> Response:
    me.who.check_csrf(csrf)
    request_id = await actions.ask_read(me.conn, me.who, name)
    return _back(f"/requests/{request_id}")


@router.post("/meters/{name:path}/recollect")
async def recollect_meter(
    name: str,
    me: Signed,
    start: Annotated[str, Form(alias="from", max_length=20)],
    end: Annotated[str, Form(alias="to", max_length=20)],
    csrf: Csrf = "",
) -> Response:
    me.who.check_csrf(csrf)
    zone = me.console.zone
    since, _ = data.day_bounds(data.parse_day(start, zone), zone)
    until, _ = data.day_bounds(data.parse_day(end, zone), zone)
    request_id = await actions.ask_recollect(me.conn, me.who, name, since, until)
    return _back(f"/requests/{request_id}")


@router.get("/requests/{request_id}")
async def request_page(request: Request, request_id: RequestId, me: Signed, conn: Reader) -> Response:
    found = await data.meter_request(conn, request_id)
    return me.console.page(request, "request.html", me.who, found)


@router.get("/meters/{name:path}")
async def meter_page(
    request: Request,
    name: str,
    me: Signed,
    conn: Reader,
    day: Annotated[str | None, Query(max_length=20)] = None,
    period: Annotated[str, Query(max_length=10)] = "day",
) -> Response:
    page = await data.meter(conn, name, data.parse_day(day, me.console.zone), me.console.zone, period)
    charts = {
        "curve_svg": load_curve(page.points, page.day_start, page.day_end),
        "bars_svg": daily_bars(page.bars, period=page.period),
        "period": page.period,
        "points": len(page.points),
    }
    return me.console.page(request, "meter.html", me.who, {**page.data, **charts})


@router.get("/commands")
async def commands_page(
    request: Request,
    me: Signed,
    conn: Reader,
    state: Annotated[str | None, Query(max_length=20)] = None,
    meter: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    found = await data.commands(conn, state or None, (meter or "").strip() or None)
    return me.console.page(request, "commands.html", me.who, found)


@router.get("/commands/{command_id}")
async def command_page(request: Request, command_id: CommandId, me: Signed, conn: Reader) -> Response:
    found = await data.command(conn, command_id)
    return me.console.page(request, "command.html", me.who, {"command": found})


@router.post("/commands")
async def create_command(
    me: Signed,
    meter: Annotated[str, Form(max_length=100)],
    action: Annotated[str, Form(max_length=20)],
    reason: Annotated[str, Form(max_length=500)] = "",
    csrf: Csrf = "",
) -> Response:
    me.who.check_csrf(csrf)
    command_id, _ = await actions.create_command(me.conn, me.who, meter, action, reason)
    return _back(f"/commands/{command_id}")


@router.post("/commands/{command_id}/approve")
async def approve_command(command_id: CommandId, me: Signed, csrf: Csrf = "") -> Response:
    me.who.check_csrf(csrf)
    await actions.approve_command(me.conn, me.who, command_id)
    return _back(f"/commands/{command_id}")


@router.post("/commands/{command_id}/cancel")
async def cancel_command(
    command_id: CommandId, me: Signed, reason: Annotated[str, Form(max_length=500)] = "", csrf: Csrf = ""
) -> Response:
    me.who.check_csrf(csrf)
    await actions.cancel(me.conn, me.who, command_id, reason)
    return _back(f"/commands/{command_id}")


@router.get("/accounts")
async def accounts_page(request: Request, me: Signed, conn: Reader) -> Response:
    found = await data.accounts(conn)
    return me.console.page(request, "accounts.html", me.who, found)


@router.get("/accounts/{number}")
async def account_page(
    request: Request,
    number: str,
    me: Signed,
    conn: Reader,
    start: Annotated[str | None, Query(alias="from", max_length=20)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=20)] = None,
    paid: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    first, last = data.period(start, end, me.console.zone)
    found = await data.account(conn, number, first, last, me.console.zone)
    return me.console.page(request, "account.html", me.who, {**found, "paid": paid})


@router.post("/accounts/{number}/payments")
async def pay(
    number: str,
    me: Signed,
    amount: Annotated[str, Form(max_length=20)],
    reference: Annotated[str, Form(max_length=200)],
    csrf: Csrf = "",
) -> Response:
    me.who.check_csrf(csrf)
    done = await actions.record_payment(me.conn, me.who, number, amount, reference)
    word = "recorded" if done.recorded else "already"
    return _back(f"/accounts/{quote(number, safe='')}?paid={word}")


@router.get("/channels")
async def channels_page(request: Request, me: Signed, conn: Reader) -> Response:
    found = await data.channels(conn)
    return me.console.page(request, "channels.html", me.who, found)


@router.get("/channels/{name}")
async def channel_page(request: Request, name: str, me: Signed, conn: Reader) -> Response:
    found = await data.channel(conn, name)
    return me.console.page(request, "channel.html", me.who, found)


Operator = Annotated[str | None, Query(max_length=20)]
Action = Annotated[str | None, Query(max_length=100)]
MeterRef = Annotated[str | None, Query(max_length=100)]
Day = Annotated[str | None, Query(max_length=20)]


@router.get("/audit")
async def audit_page(
    request: Request,
    me: Signed,
    conn: Reader,
    operator: Operator = None,
    action: Action = None,
    meter: MeterRef = None,
    start: Annotated[str | None, Query(alias="from", max_length=20)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=20)] = None,
) -> Response:
    zone = me.console.zone
    which = await data.audit_filter(conn, operator, action, meter, start, end, zone)
    found = await data.audit(conn, which, 200)
    asked = {"operator": operator, "action": action, "meter": meter, "from": start, "to": end}
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in asked.items() if v)
    return me.console.page(request, "audit.html", me.who, {**found, "asked": asked, "query": query})


@router.get("/audit.csv")
async def audit_export(
    me: SignedOnce,
    operator: Operator = None,
    action: Action = None,
    meter: MeterRef = None,
    start: Annotated[str | None, Query(alias="from", max_length=20)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=20)] = None,
) -> Response:
    zone = me.console.zone
    # no pooled connection held while the response is sent (a ``Reader`` or ``Signed`` one would be,
    # until the last byte, as slow as the client): the desk one goes back as this returns, the
    # filter's lookup gives its own back, and the export takes one per page
    async with me.console.report.acquire() as conn:
        which = await data.audit_filter(conn, operator, action, meter, start, end, zone)
    return StreamingResponse(
        audit_csv(me.console.report, which, zone),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="audit.csv"'},
    )


OperatorPath = Annotated[str, Path(max_length=20)]


async def _operators_page(request: Request, me: Signed, secret: tuple[str, str] | None = None) -> Response:
    listed = await operator_admin.operators(me.conn, me.who)
    context = {"operators": listed, "secret": secret}
    return me.console.page(request, "operators.html", me.who, context)


@router.get("/operators")
async def operators_page(request: Request, me: Signed) -> Response:
    return await _operators_page(request, me)


@router.post("/operators")
async def add_operator(
    request: Request,
    me: Signed,
    operator_id: Annotated[str, Form(alias="id", max_length=20)],
    name: Annotated[str, Form(max_length=200)],
    roles: Annotated[str, Form(max_length=100)],
    password: Annotated[str, Form(max_length=200)] = "",
    csrf: Csrf = "",
) -> Response:
    me.who.check_csrf(csrf)
    shown = await operator_admin.add(me.conn, me.who, operator_id, name, roles, password)
    if shown is None:
        return _back("/operators")
    return await _operators_page(request, me, (operator_id.strip(), shown))


@router.post("/operators/{operator_id}/disable")
async def disable_operator(
    operator_id: OperatorPath, me: Signed, reason: Annotated[str, Form(max_length=500)] = "", csrf: Csrf = ""
) -> Response:
    me.who.check_csrf(csrf)
    await operator_admin.set_active(me.conn, me.who, operator_id, False, reason)
    return _back("/operators")


@router.post("/operators/{operator_id}/enable")
async def enable_operator(
    operator_id: OperatorPath, me: Signed, reason: Annotated[str, Form(max_length=500)] = "", csrf: Csrf = ""
) -> Response:
    me.who.check_csrf(csrf)
    await operator_admin.set_active(me.conn, me.who, operator_id, True, reason)
    return _back("/operators")


@router.post("/operators/{operator_id}/password")
async def reset_password(
    request: Request,
    operator_id: OperatorPath,
    me: Signed,
    password: Annotated[str, Form(max_length=200)] = "",
    csrf: Csrf = "",
) -> Response:
    me.who.check_csrf(csrf)
    shown = await operator_admin.reset_password(me.conn, me.who, operator_id, password)
    if shown is None:
        return _back("/operators")
    return await _operators_page(request, me, (operator_id, shown))
