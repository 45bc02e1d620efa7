"""The integration API's readings feeds, as the readings export (``headend export readings``) gives
them: a meter's interval readings and daily registers for a period, and the fleet's daily registers
of one day; multipliers applied, quality flags kept. Paged by an opaque keyset cursor (the last key
given, never an offset), read whole (a page is bounded) on a connection the route gives back before the
response goes out, then rendered as JSON or CSV chunk by chunk: a client reading slowly (or not at all)
holds no pooled connection. The same request gives the same bytes."""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from headend.analytics.export import DAILY_COLUMNS, INTERVAL_COLUMNS, Row, daily_rows, interval_row
from headend.inventory import InventoryError, find_meter
from headend.store.export import (
    ExportMeter,
    export_meters,
    export_meters_after,
    quantity_id,
    readings_between,
)
from headend.web.data import BadRequest, NotFound
from headend.web.export import CHUNK, ONE_MICROSECOND, drain

MAX_DAYS = 3660  # a period of at most ten years


@dataclass(frozen=True, slots=True)
class Page:
    """A page of rows: the columns, the rows (read), the cursor of the next page or None."""

    columns: tuple[str, ...]
    rows: list[Row]
    next: str | None


def days(first: str | None, after: str | None) -> tuple[date, date]:
    """Local days ``[from, to)`` from ``YYYY-MM-DD`` texts (as ``headend export readings --from --to``):
    the first and the last day."""
    if not first or not after:
        raise BadRequest("from and to (YYYY-MM-DD, to not included) are required")
    start, end = _day("from", first), _day("to", after)
    if end <= start:
        raise BadRequest(f"to {end} is not after from {start}")
    if (end - start).days > MAX_DAYS:
        raise BadRequest(f"a period is at most {MAX_DAYS} days")
    return start, end - timedelta(days=1)


def _day(name: str, text: str) -> date:
    try:
        found = date.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{name} must be YYYY-MM-DD, got {text[:20]!r}") from None
    if not 1970 <= found.year <= 9998:
        raise BadRequest(f"{name} {found} is outside 1970..9998")
    return found


def day_of(text: str | None) -> date:
    """The ``date`` parameter of the fleet's daily registers."""
    if not text:
        raise BadRequest("date (YYYY-MM-DD) is required")
    return _day("date", text)


def _fingerprint(*query: object) -> str:
    return hashlib.sha256(repr(query).encode()).hexdigest()[:16]


def _cursor(query: str, after: str | int) -> str:
    raw = json.dumps({"q": query, "after": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(cursor: str | None, query: str) -> object:
    """The key a cursor continues after (None without a cursor); BadRequest for another query's."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        found = json.loads(raw)
    except (binascii.Error, ValueError):
        raise BadRequest("the cursor is not one this API gave") from None
    if not isinstance(found, dict) or "after" not in found:
        raise BadRequest("the cursor is not one this API gave")
    if found.get("q") != query:
        raise BadRequest("the cursor belongs to another query: repeat the query it came with")
    return found["after"]


async def _meter(
    conn: asyncpg.Connection, ref: str, first: date, last: date, zone: ZoneInfo
) -> ExportMeter | None:
    """The meter ``ref`` names (NotFound if none), as the export has it; None when it was not in
    service in the period (its pages are empty)."""
    try:
        meter_id, _ = await find_meter(conn, ref)
    except InventoryError as exc:
        raise NotFound(str(exc)) from None
    listed = await export_meters(conn, first, last, zone.key, [ref], None)
    return next((m for m in listed if m.id == meter_id), None)


async def _quantity(conn: asyncpg.Connection, name: str) -> int:
    found = await quantity_id(conn, name)
    if found is None:
        raise NotFound(f"no readings of {name!r} are stored")
    return found


async def interval_page(
    conn: asyncpg.Connection,
    ref: str,
    first: date,
    last: date,
    quantity: str,
    cursor: str | None,
    limit: int,
    zone: ZoneInfo,
) -> Page:
    """Up to ``limit`` of the meter's stored readings in the local days ``first`` … ``last``, by time,
    after the cursor's."""
    meter = await _meter(conn, ref, first, last, zone)
    qid = await _quantity(conn, quantity)
    if meter is None:
        return Page(INTERVAL_COLUMNS, [], None)
    query = _fingerprint("readings", meter.id, first, last, qid)
    after = _after(cursor, query)
    start = datetime.combine(first, time(0), zone)
    end = datetime.combine(last + timedelta(days=1), time(0), zone)
    if after is not None:
        try:
            start = max(start, datetime.fromisoformat(str(after)) + ONE_MICROSECOND)
        except ValueError:
            raise BadRequest("the cursor is not one this API gave") from None
    taken: list[asyncpg.Record] = []
    stream = readings_between(conn, [meter.id], qid, start, end)
    try:
        async for row in stream:
            taken.append(row)
            if len(taken) > limit:
                break
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    more = len(taken) > limit
    taken = taken[:limit]
    following = _cursor(query, taken[-1]["ts"].isoformat()) if more else None
    return Page(INTERVAL_COLUMNS, [interval_row(meter, row, zone) for row in taken], following)


async def meter_daily(
    conn: asyncpg.Connection,
    ref: str,
    first: date,
    last: date,
    quantity: str,
    zone: ZoneInfo,
) -> Page:
    """The meter's daily registers of the local days ``first`` … ``last`` (one page: a period is
    bounded)."""
    meter = await _meter(conn, ref, first, last, zone)
    qid = await _quantity(conn, quantity)
    chosen = [] if meter is None else [meter]
    return Page(DAILY_COLUMNS, await _daily(conn, chosen, qid, first, last, zone), None)


async def fleet_daily(
    conn: asyncpg.Connection,
    day: date,
    quantity: str,
    cursor: str | None,
    limit: int,
    zone: ZoneInfo,
) -> Page:
    """Every meter's daily register of ``day``, by meter, ``limit`` meters a page after the cursor's."""
    qid = await _quantity(conn, quantity)
    query = _fingerprint("daily", day, qid)
    after = _after(cursor, query)
    if after is not None and (
        not isinstance(after, int) or isinstance(after, bool) or not 0 <= after < 2**31
    ):
        raise BadRequest("the cursor is not one this API gave")
    meters = await export_meters_after(conn, day, zone.key, after, limit + 1)
    page = meters[:limit]
    following = _cursor(query, page[-1].id) if len(meters) > limit else None
    return Page(DAILY_COLUMNS, await _daily(conn, page, qid, day, day, zone), following)


async def _daily(
    conn: asyncpg.Connection, meters: list[ExportMeter], qid: int, first: date, last: date, zone: ZoneInfo
) -> list[Row]:
    if not meters:
        return []
    return [row async for row in daily_rows(conn, meters, qid, first, last, zone, lambda _done: None)]


def _plain(value: object) -> object:
    """Days and times in ISO 8601; everything else as it is (as the CLI export writes JSON)."""
    return value.isoformat() if isinstance(value, date | datetime) else value


async def as_json(page: Page) -> AsyncIterator[str]:
    """``{"next": cursor, "columns": [...], "rows": [{...}, ...]}``, one row a line."""
    yield json.dumps({"next": page.next, "columns": list(page.columns)})[:-1] + ', "rows": ['
    buffer, first = io.StringIO(), True
    for row in page.rows:
        item = json.dumps(dict(zip(page.columns, map(_plain, row), strict=True)), ensure_ascii=False)
        buffer.write(("\n" if first else ",\n") + item)
        first = False
        if buffer.tell() >= CHUNK:
            yield drain(buffer)
    buffer.write("\n]}\n" if not first else "]}\n")
    yield buffer.getvalue()


async def as_csv(page: Page) -> AsyncIterator[str]:
    """A header line, then one line per row (an absent value: an empty field), lines ended as the CLI
    export ends them."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(page.columns)
    for row in page.rows:
        writer.writerow(row)
        if buffer.tell() >= CHUNK:
            yield drain(buffer)
    yield buffer.getvalue()
