"""The VEE holds and tariffs pages and their JSON endpoints: every signed-in operator sees them (as
``headend billing holds`` and ``headend tariffs`` show them to any desk user); an admin releases a
hold or keeps it with a note."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Path, Request, Response
from fastapi.responses import RedirectResponse

from headend.web import holds, tariffs
from headend.web.api import CsrfHeader
from headend.web.billing_schemas import HoldDone, HoldsOut, Keep, Release, TariffOut, TariffsOut
from headend.web.deps import Reader, Signed
from headend.web.pages import Csrf

pages = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api")
HoldId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Json = dict[str, object]


@pages.get("/vee")
async def holds_page(request: Request, me: Signed, conn: Reader) -> Response:
    found = await holds.holds(conn)
    return me.console.page(request, "vee.html", me.who, found)


@pages.post("/vee/{hold_id}/release")
async def release_hold(
    hold_id: HoldId,
    me: Signed,
    resolution: Annotated[str, Form(max_length=20)],
    reason: Annotated[str, Form(max_length=500)] = "",
    final: Annotated[str, Form(max_length=40)] = "",
    initial: Annotated[str, Form(max_length=40)] = "",
    value: Annotated[str, Form(max_length=40)] = "",
    csrf: Csrf = "",
) -> Response:
    me.who.check_csrf(csrf)
    given: dict[str, str | float | None] = {"final": final, "initial": initial, "value": value}
    await holds.release(me.conn, me.who, hold_id, resolution, reason, given)
    return RedirectResponse("/vee", status_code=303)


@pages.post("/vee/{hold_id}/keep")
async def keep_hold(
    hold_id: HoldId, me: Signed, note: Annotated[str, Form(max_length=500)] = "", csrf: Csrf = ""
) -> Response:
    me.who.check_csrf(csrf)
    await holds.keep(me.conn, me.who, hold_id, note)
    return RedirectResponse("/vee", status_code=303)


@pages.get("/tariffs")
async def tariffs_page(request: Request, me: Signed, conn: Reader) -> Response:
    return me.console.page(request, "tariffs.html", me.who, await tariffs.tariffs(conn))


@pages.get("/tariffs/{name}")
async def tariff_page(request: Request, name: str, me: Signed, conn: Reader) -> Response:
    return me.console.page(request, "tariff.html", me.who, await tariffs.tariff(conn, name))


@api.get("/vee", response_model=HoldsOut)
async def holds_json(signed: Signed, conn: Reader) -> Json:
    """The open VEE holds with their notes, and the holds resolved last."""
    return await holds.holds(conn)


@api.post("/vee/{hold_id}/release", response_model=HoldDone)
async def release_json(hold_id: HoldId, body: Release, signed: Signed, csrf: CsrfHeader = None) -> HoldDone:
    """Release a hold (admin role) as ``headend billing resolve`` does: accepted, replaced or
    corrected, with a reason; billing and automatic disconnection of the register go on."""
    signed.who.check_csrf(csrf)
    given: dict[str, str | float | None] = {"final": body.final, "initial": body.initial, "value": body.value}
    await holds.release(signed.conn, signed.who, hold_id, body.resolution, body.reason, given)
    return HoldDone(id=hold_id, open=False)


@api.post("/vee/{hold_id}/keep", response_model=HoldDone)
async def keep_json(hold_id: HoldId, body: Keep, signed: Signed, csrf: CsrfHeader = None) -> HoldDone:
    """Keep a hold open with a note (admin role; audited as ``vee.noted``)."""
    signed.who.check_csrf(csrf)
    await holds.keep(signed.conn, signed.who, hold_id, body.note)
    return HoldDone(id=hold_id, open=True)


@api.get("/tariffs", response_model=TariffsOut)
async def tariffs_json(signed: Signed, conn: Reader) -> Json:
    """Every tariff: kind, currency, accounts on it, number of versions."""
    return await tariffs.tariffs(conn)


@api.get("/tariffs/{name}", response_model=TariffOut)
async def tariff_json(name: str, signed: Signed, conn: Reader) -> Json:
    """One tariff: its register prices by the time they take effect, its time-of-use periods or tiered
    blocks by revision."""
    return await tariffs.tariff(conn, name)
