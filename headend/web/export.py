"""The audit log and a meter's readings as CSV, streamed: rows are written as the database cursor
yields them."""

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


async def audit_csv(pool: asyncpg.Pool, which: AuditFilter, zone: ZoneInfo) -> AsyncIterator[str]:
    """A header line, then one line per matching entry, oldest first; times in ``zone`` with their
    offset; a text cell that a spreadsheet would take for a formula starts with a quote."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(console_audit.COLUMNS)
    async with pool.acquire() as conn:
        async for row in console_audit.stream(conn, which):
            writer.writerow([_cell(row[c], zone) for c in console_audit.COLUMNS])
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
