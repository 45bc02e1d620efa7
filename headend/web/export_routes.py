"""``/readings.csv``: one meter's stored readings over local days, streamed as CSV (any signed-in
operator, on the reporting login)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from headend.inventory import InventoryError, find_meter
from headend.web import data
from headend.web.deps import SignedOnce
from headend.web.export import readings_csv

router = APIRouter()


@router.get("/readings.csv", response_class=StreamingResponse)
async def readings_export(
    me: SignedOnce,
    meter: Annotated[str, Query(min_length=1, max_length=100, description="Meter name or address.")],
    start: Annotated[str | None, Query(alias="from", max_length=20, description="First local day.")] = None,
    end: Annotated[str | None, Query(alias="to", max_length=20, description="Last local day.")] = None,
    quantity: Annotated[str, Query(max_length=50)] = "energy_import_kwh",
) -> Response:
    """A meter's stored readings of local days [from, to] (default: the last 90) as CSV: ``ts`` (in the
    station's zone), ``value``, ``consumption`` since the reading before, ``quality``."""
    zone = me.console.zone
    first, last = data.period(start, end, zone)
    # no pooled connection held while the response is sent (a ``Signed`` or ``Reader`` one would be,
    # until the last byte, as slow as the client): the desk one goes back as this returns, the
    # lookup's goes back here, and the export takes one per page
    async with me.console.report.acquire() as conn:
        try:
            meter_id, _ = await find_meter(conn, meter.strip())
        except InventoryError as exc:
            raise data.NotFound(str(exc)) from None
    since, _ = data.day_bounds(first, zone)
    _, until = data.day_bounds(last, zone)
    name = quote(f"{meter.strip()}_{first}_{last}.csv", safe="")
    return StreamingResponse(
        readings_csv(me.console.report, meter_id, quantity, since, until, zone),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f"attachment; filename*=UTF-8''{name}"},
    )
