"""The audit log and a meter's readings as CSV, streamed: the audit log a page of entries at a time
(no connection held between pages), a meter's readings as the database cursor yields them."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from zoneinfo import ZoneInfo

import asyncpg

from headend.store import console_audit
from headend.store.console_audit import AuditFilter
from headend.store.series import stream_readings

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run such a cell as a formula
CHUNK = 65536
AUDIT_PAGE = 1000  # audit entries per query of an export


async def audit_csv(
    pool: asyncpg.Pool, which: AuditFilter, zone: ZoneInfo, page: int = AUDIT_PAGE
) -> AsyncIterator[str]:
    """A header line, then one line per matching entry up to the newest when the export starts, oldest
    first; times in ``zone`` with their offset; a text cell that a spreadsheet would take for a formula
    starts with a quote. Each page of ``page`` entries is read on a pooled connection given back before
    its lines are sent: a client reading slowly (or not at all) holds no connection of the pool."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(console_audit.COLUMNS)
    async with pool.acquire() as conn:
        upto = await console_audit.newest_id(conn)
    last = 0
    while True:
        async with pool.acquire() as conn:
            rows = await console_audit.after(conn, which, last, upto, page)
        for row in rows:
            writer.writerow([_cell(row[c], zone) for c in console_audit.COLUMNS])
        if len(rows) < page:
            break
        last = int(str(rows[-1]["id"]))
        if buffer.tell() >= CHUNK:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


READING_COLUMNS = ("ts", "value", "consumption", "quality")


async def readings_csv(
    pool: asyncpg.Pool, meter_id: int, quantity: str, start: datetime, end: datetime, zone: ZoneInfo
) -> AsyncIterator[str]:
    """A header line, then each stored reading of the meter's ``quantity`` in ``[start, end)`` with
    its growth since the reading before and its quality (what ``headend readings --format csv``
    prints), times in ``zone``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(READING_COLUMNS)
    async with pool.acquire() as conn:
        async for row in stream_readings(conn, meter_id, quantity, start, end):
            writer.writerow([_cell(row[c], zone) for c in READING_COLUMNS])
            if buffer.tell() >= CHUNK:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue()


def _cell(value: object, zone: ZoneInfo) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(zone).isoformat()
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text
