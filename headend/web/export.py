"""The audit log and a meter's readings as CSV, streamed a page of rows at a time: no pooled
connection is held between pages, nor while the client reads."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from headend.store import console_audit, series
from headend.store.console_audit import AuditFilter
from headend.store.plans import custom_plans

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run such a cell as a formula
CHUNK = 65536  # characters of a streamed response per chunk sent
AUDIT_PAGE = 1000  # audit entries per query of an export
ONE_MICROSECOND = timedelta(microseconds=1)  # timestamptz's resolution: "after t" is ">= t + 1 µs"


def audit_csv(
    pool: asyncpg.Pool, which: AuditFilter, zone: ZoneInfo, page: int = AUDIT_PAGE
) -> AsyncIterator[str]:
    """A header line, then one line per matching entry up to the newest when the export starts, oldest
    first; times in ``zone`` with their offset; a text cell that a spreadsheet would take for a formula
    starts with a quote. Each page of ``page`` entries is read on a pooled connection given back before
    its lines are sent: a client reading slowly (or not at all) holds no connection of the pool."""
    return _csv(console_audit.COLUMNS, _audit_pages(pool, which, page), zone)


async def _audit_pages(
    pool: asyncpg.Pool, which: AuditFilter, page: int
) -> AsyncIterator[list[asyncpg.Record]]:
    async with pool.acquire() as conn:
        upto = await console_audit.newest_id(conn)
    last = 0
    while True:
        async with pool.acquire() as conn:
            rows = await console_audit.after(conn, which, last, upto, page)
        yield rows
        if len(rows) < page:
            return
        last = int(str(rows[-1]["id"]))


READING_COLUMNS = ("ts", "value", "consumption", "quality")
READINGS_PAGE = 5000  # readings per query of an export at most: about 250 kB of CSV
# the time a page's query covers at first: each query reads only the chunks or partitions of its window
# (planned for it), and the window follows the meter's density (a page that filled sets the next
# window to what it covered; a window that did not fill doubles it), so that a meter-year reads each
# chunk about once, whatever its interval
FIRST_WINDOW = timedelta(days=7)


def readings_csv(
    pool: asyncpg.Pool,
    meter_id: int,
    quantity: str,
    start: datetime,
    end: datetime,
    zone: ZoneInfo,
    page: int = READINGS_PAGE,
) -> AsyncIterator[str]:
    """A header line, then each stored reading of the meter's ``quantity`` in ``[start, end)`` with
    its growth since the reading before and its quality (what ``headend readings --format csv``
    prints), times in ``zone``. Each page of at most ``page`` readings is read on a pooled connection
    given back before its lines are sent (the next page starts after the last one's time and takes its
    value for the first consumption): a client reading slowly (or not at all) holds no connection."""
    return _reading_lines(_reading_pages(pool, meter_id, quantity, start, end, page), zone)


async def _reading_pages(
    pool: asyncpg.Pool, meter_id: int, quantity: str, start: datetime, end: datetime, page: int
) -> AsyncIterator[list[asyncpg.Record]]:
    since, previous, window = start, None, FIRST_WINDOW
    while since < end:
        until = min(end, since + window)
        async with pool.acquire() as conn, custom_plans(conn):
            rows = await series.readings_page(conn, meter_id, quantity, since, until, previous, page)
        if rows:
            yield rows
            previous = rows[-1]["value"]
        if len(rows) < page:  # the window is done
            since, window = until, window * 2
        else:
            covered = rows[-1]["ts"] - since
            since = rows[-1]["ts"] + ONE_MICROSECOND  # after the last one
            window = max(covered, ONE_MICROSECOND)


async def _csv(
    columns: Sequence[str], pages: AsyncIterator[list[asyncpg.Record]], zone: ZoneInfo
) -> AsyncIterator[str]:
    """The header, then each page's rows, in chunks of about ``CHUNK`` characters (each page is read
    before any of its lines is sent, and nothing is read while a chunk is being sent)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    async for rows in pages:
        for row in rows:
            writer.writerow([_cell(row[c], zone) for c in columns])
        if buffer.tell() >= CHUNK:
            yield drain(buffer)
    yield buffer.getvalue()


async def _reading_lines(pages: AsyncIterator[list[asyncpg.Record]], zone: ZoneInfo) -> AsyncIterator[str]:
    """As ``_csv`` for readings (``READING_COLUMNS``: a time, two numbers and a quality word, none of
    which needs quoting): the same bytes, each line formatted directly, without the CSV writer."""
    yield ",".join(READING_COLUMNS) + "\r\n"
    lines: list[str] = []
    size = 0
    async for rows in pages:
        for ts, value, consumption, quality in rows:
            line = f"{ts.astimezone(zone).isoformat()},{_number(value)},{_number(consumption)},{quality}\r\n"
            lines.append(line)
            size += len(line)
        if size >= CHUNK:
            yield "".join(lines)
            lines, size = [], 0
    yield "".join(lines)


def _number(value: float | None) -> str:
    """A number's cell as ``_cell`` writes it: a negative one starts with a quote."""
    if value is None:
        return ""
    text = str(value)
    return "'" + text if text[0] == "-" else text


def drain(buffer: io.StringIO) -> str:
    """What ``buffer`` holds, leaving it empty."""
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def _cell(value: object, zone: ZoneInfo) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(zone).isoformat()
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text
