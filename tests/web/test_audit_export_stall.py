"""``/audit.csv``, ``/readings.csv`` and the integration API's feeds (``/api/v1``) hold no pooled
connection while their client reads: three downloads whose clients stop reading at the first chunk
(more than the console's two connections per pool) leave the other pages answering, and each
download, once read on, is whole (every audit entry, oldest first, once; every reading with its
consumption, exactly as one unpaged query computes it, across the pages of the export; every interval
reading and daily register as computed here from the stored readings, across the feed's pages).

The application is driven through ASGI in this process: a download's ``send`` stands for a client
that does not read, as a full socket makes the server's send wait."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import asyncpg
import httpx
from fastapi import FastAPI

from headend.config import WebConfig
from headend.store.reading import Reading
from headend.store.writer import ReadingWriter
from headend.web.app import create_app
from headend.web.export import FORMULA_START, readings_csv
from headend.web.identity import SESSION_COOKIE
from tests.support.logins import daemon_dsn, desk_dsn, report_dsn
from tests.support.operators import PASSWORD, add_operators
from tests.support.waiting import wait_until

ENTRIES = 3000  # several pages and CSV chunks
DOWNLOADS = 3  # more than the pool's connections
READINGS = 3000  # more than one CSV chunk
STATION = ZoneInfo("Asia/Shanghai")  # the console's default zone
FIRST = datetime(2026, 3, 1, tzinfo=STATION)  # the first local day exported
Q = timedelta(minutes=15)
FLAGGED = {960: "estimated", 1248: "suspect"}  # the readings at the 11th and 14th local midnights
CLOSING = 2000.0  # the register at the midnight closing the last day exported
ADDRESS = "000000000001"  # m-csv's

Message = MutableMapping[str, Any]


class StalledDownload:
    """A GET of ``path`` whose client stops reading at the first body chunk until ``reading`` is set."""

    def __init__(
        self, app: Callable[..., Awaitable[None]], session: str, path: str = "/audit.csv", query: str = ""
    ) -> None:
        self.stalled = asyncio.Event()
        self.reading = asyncio.Event()
        self.body = bytearray()
        self.status = 0
        cookie = f"{SESSION_COOKIE}={session}".encode()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"cookie", cookie)],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
        }
        self.task = asyncio.create_task(app(scope, self._receive, self._send))
        self._asked = False

    async def _receive(self) -> Message:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client never hangs up
        raise AssertionError("unreachable")

    async def _send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            return
        if message.get("body") and not self.reading.is_set():
            self.stalled.set()
            await self.reading.wait()  # the socket is full: the server's send waits for the client
        self.body += message.get("body", b"")


async def _seed_audit(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await add_operators(conn, o1="viewer")
        await conn.execute(
            "INSERT INTO audit_log (at, actor, action, entity, entity_id, reason)"
            " SELECT now(), '9', 'billing.run', 'billing_period', g::text, 'run ' || g"
            " FROM generate_series(1, $1) g",
            ENTRIES,
        )
    finally:
        await conn.close()


@asynccontextmanager
async def _console(pg_dsn: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, str]]:
    """The console with two connections per pool, in this process, and a viewer's session."""
    app = create_app(WebConfig(pool_size=2), desk_dsn(pg_dsn), report_dsn(pg_dsn))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            form = await client.get("/signin")
            signin = form.text.split('name="signin" value="', 1)[1].split('"', 1)[0]
            fields = {"operator": "1", "password": PASSWORD, "signin": signin}
            done = await client.post("/signin", data=fields)  # a viewer, as a browser signs in
            assert done.status_code == 303, done.text[:300]
            yield app, client, str(done.cookies[SESSION_COOKIE])


async def _stalled_then_read(
    app: FastAPI,
    client: httpx.AsyncClient,
    session: str,
    targets: list[tuple[str, str]],
    pages: tuple[str, ...],
) -> list[StalledDownload]:
    """Downloads of ``targets`` (path, query) stalled at their first chunk while ``pages`` must answer
    within 10 s; then each read to its end."""
    downloads = [StalledDownload(app, session, path, query) for path, query in targets]
    try:
        await wait_until(
            lambda: all(d.stalled.is_set() for d in downloads), 20, "every download's first chunk"
        )
        async with asyncio.timeout(10):  # each page takes a connection of both pools
            for page in pages:
                answered = await client.get(page)
                assert answered.status_code == 200, (page, answered.text[:300])
        for download in downloads:
            download.reading.set()
        async with asyncio.timeout(20):
            await asyncio.gather(*(d.task for d in downloads))
    finally:  # a failure leaves downloads waiting for a connection: end them and the pools
        tasks = [d.task for d in downloads]
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=5)
        if any(task.cancelled() for task in tasks):  # their connections are not given back
            app.state.console.desk.terminate()
            app.state.console.report.terminate()
    return downloads


async def test_stalled_audit_downloads_do_not_starve_the_console(pg_dsn: str) -> None:
    await _seed_audit(pg_dsn)
    async with _console(pg_dsn) as (app, client, session):
        pages = ("/api/overview", "/api/audit", "/api/campaigns")
        downloads = await _stalled_then_read(app, client, session, [("/audit.csv", "")] * DOWNLOADS, pages)
    for download in downloads:
        assert download.status == 200
        lines = list(csv.reader(io.StringIO(download.body.decode())))
        assert lines[0] == ["id", "at", "actor", "action", "entity", "entity_id", "reason", "details"]
        ids = [int(row[0]) for row in lines[1:]]
        assert ids == sorted(set(ids))  # oldest first, each once
        runs = [row[5] for row in lines[1:] if row[3] == "billing.run"]
        assert runs == [str(n) for n in range(1, ENTRIES + 1)]


def _readings(meter: int) -> list[Reading]:
    """``READINGS`` quarter-hours from ``FIRST``: a register growing by tenths (inexact in binary, so
    a consumption is the float difference), a gap every 97th, one going back (a negative consumption),
    and at the edges of 1000-reading pages: the 1000th with a value (the 1001st's consumption is taken
    from it) and the 2000th missing (the 2001st has none); two local midnights' registers estimated
    and suspect (the daily registers' flags)."""
    rows, value = [], 1000.0
    for n in range(READINGS):
        value += 0.1
        if n == 1500:
            value -= 0.7
        if n % 97 == 5 or n == 1999:
            rows.append(Reading(meter, "energy_import_kwh", FIRST + n * Q, None, "missing", "backfill"))
        elif n in FLAGGED:
            rows.append(Reading(meter, "energy_import_kwh", FIRST + n * Q, value, FLAGGED[n], "profile"))
        elif n % 3 == 1:
            rows.append(Reading(meter, "energy_import_kwh", FIRST + n * Q, value, "backfilled", "profile"))
        else:
            rows.append(Reading(meter, "energy_import_kwh", FIRST + n * Q, value))
    return rows


async def _seed_readings(pg_dsn: str, spool: Path) -> list[Reading]:
    """A viewer, the meter ``m-csv`` (installed a month before) with ``_readings`` and one reading on
    each side of its days."""
    conn = await asyncpg.connect(pg_dsn)
    writer = ReadingWriter(daemon_dsn(pg_dsn), spool_dir=spool)
    try:
        await add_operators(conn, o1="viewer")
        channel = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('bus-a', 'tcp', '127.0.0.1:1') RETURNING id"
        )
        meter = await conn.fetchval(
            "INSERT INTO meters (protocol, address, model, channel_id, name, installed_at) "
            "VALUES ('dlt645-2007', $1, 'dlt645-generic', $2, 'm-csv', $3) RETURNING id",
            ADDRESS,
            channel,
            FIRST - timedelta(days=30),
        )
        readings = _readings(meter)
        end = datetime.combine(readings[-1].ts.date() + timedelta(days=1), FIRST.timetz())
        outside = [
            Reading(meter, "energy_import_kwh", FIRST - Q, 990.0),
            Reading(meter, "energy_import_kwh", end, CLOSING),
        ]
        await writer.start()
        await writer.submit(readings + outside)
        await writer.flush()
    finally:
        await writer.close()
        await conn.close()
    return readings


def _expected(readings: list[Reading]) -> str:
    """The CSV computed here: the first reading has no consumption (the one before the first day is
    not counted), each other one its value less the one before, when both have one."""

    def cell(text: str) -> str:
        return "'" + text if text.startswith(FORMULA_START) else text

    lines, previous = ["ts,value,consumption,quality"], None
    for r in readings:
        used = "" if r.value is None or previous is None else cell(str(r.value - previous))
        shown = "" if r.value is None else str(r.value)
        lines.append(f"{r.ts.astimezone(STATION).isoformat()},{shown},{used},{r.quality}")
        previous = r.value
    return "\r\n".join(lines) + "\r\n"


async def test_stalled_readings_downloads_do_not_starve_the_console(pg_dsn: str, tmp_path: Path) -> None:
    readings = await _seed_readings(pg_dsn, tmp_path / "spool")
    expected = _expected(readings)
    assert "'-" in expected and ",,,missing" in expected  # what the rows are for
    last = readings[-1].ts.date().isoformat()
    query = urlencode({"meter": "m-csv", "from": FIRST.date().isoformat(), "to": last})
    async with _console(pg_dsn) as (app, client, session):
        pages = ("/api/overview", "/api/meters/m-csv", "/api/audit")
        downloads = await _stalled_then_read(
            app, client, session, [("/readings.csv", query)] * DOWNLOADS, pages
        )
        meter = await app.state.console.report.fetchval("SELECT id FROM meters WHERE name = 'm-csv'")
        for page in (1000, 103, READINGS):  # 3 pages, 30 (the first ends at a gap), 1: the same bytes
            parts = readings_csv(
                app.state.console.report,
                meter,
                "energy_import_kwh",
                FIRST,
                readings[-1].ts + Q,
                STATION,
                page,
            )
            assert "".join([part async for part in parts]) == expected, page
        # from a month before: two empty windows, then the reading before the first day and the rest
        before = Reading(meter, "energy_import_kwh", FIRST - Q, 990.0)
        parts = readings_csv(
            app.state.console.report,
            meter,
            "energy_import_kwh",
            FIRST - timedelta(days=30),
            readings[-1].ts + Q,
            STATION,
            103,
        )
        assert "".join([part async for part in parts]) == _expected([before, *readings])
    for download in downloads:
        assert download.status == 200
        assert download.body.decode() == expected


def _intervals(readings: list[Reading]) -> list[dict[str, object]]:
    """The interval feed's rows computed here: each stored reading × the multiplier (1), rounded to
    6 decimals, at its local time."""
    return [
        {
            "meter": "m-csv",
            "address": ADDRESS,
            "ts": r.ts.astimezone(STATION).isoformat(),
            "multiplier": 1.0,
            "value_kwh": None if r.value is None else round(r.value, 6),
            "quality": r.quality,
        }
        for r in readings
    ]


def _registers(readings: list[Reading]) -> list[dict[str, object]]:
    """The daily feed's rows computed here: per local day, the register at its opening midnight and
    the growth to the next (the closing midnight's register ends the last day), flagged as the worse of
    the two (estimated or suspect), missing without either."""
    stored = {r.ts: (r.value, r.quality) for r in readings if r.value is not None}
    last = readings[-1].ts.astimezone(STATION).date()
    stored[datetime.combine(last + timedelta(days=1), FIRST.timetz())] = (CLOSING, "actual")
    rows: list[dict[str, object]] = []
    day = FIRST.date()
    while day <= last:
        start = stored.get(datetime.combine(day, FIRST.timetz()))
        end = stored.get(datetime.combine(day + timedelta(days=1), FIRST.timetz()))
        flagged = [q for _v, q in (start, end) if _v is not None and q in ("estimated", "suspect")]
        both = start is not None and end is not None
        rows.append(
            {
                "meter": "m-csv",
                "address": ADDRESS,
                "day": day.isoformat(),
                "multiplier": 1.0,
                "register_kwh": None if start is None else round(start[0], 6),
                "register_quality": "missing" if start is None else start[1],
                "consumption_kwh": round(end[0] - start[0], 6) if start and end else None,
                "consumption_quality": "missing" if not both else (flagged or ["valid"])[0],
            }
        )
        day += timedelta(days=1)
    return rows


def _as_csv(rows: list[dict[str, object]]) -> str:
    """The rows as the feed's CSV computed here: a header, an absent value an empty field."""
    lines = [",".join(rows[0])]
    lines += [",".join("" if v is None else str(v) for v in row.values()) for row in rows]
    return "\n".join(lines) + "\n"


async def _walk(client: httpx.AsyncClient, path: str, params: dict[str, str]) -> tuple[list[object], int]:
    """Every row of a paged feed (JSON rows, or CSV lines without the header), following the cursor,
    and how many pages it took."""
    rows: list[object] = []
    cursor, pages = None, 0
    while True:
        page = await client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text[:300]
        pages += 1
        cursor = page.headers.get("x-next-cursor")
        if path.endswith(".csv"):
            rows += page.text.splitlines(keepends=True)[1:]
        else:
            assert page.json()["next"] == cursor
            rows += page.json()["rows"]
        if cursor is None:
            return rows, pages


async def test_stalled_api_feeds_do_not_starve_the_console(pg_dsn: str, tmp_path: Path) -> None:
    readings = await _seed_readings(pg_dsn, tmp_path / "spool")
    intervals, registers = _intervals(readings), _registers(readings)
    assert {r["consumption_quality"] for r in registers} == {"valid", "estimated", "suspect"}
    assert "suspect" in {r["register_quality"] for r in registers}
    assert intervals[1999]["value_kwh"] is None
    period = {
        "from": FIRST.date().isoformat(),
        "to": (readings[-1].ts.date() + timedelta(days=1)).isoformat(),
    }
    whole = urlencode({**period, "limit": READINGS})
    fleet_day = "2026-03-14"  # the suspect register's day
    targets = [
        ("/api/v1/meters/m-csv/readings", whole),
        (f"/api/v1/meters/{ADDRESS}/readings.csv", whole),
        ("/api/v1/meters/m-csv/daily.csv", urlencode(period)),
        ("/api/v1/daily", urlencode({"date": fleet_day})),
    ]
    async with _console(pg_dsn) as (app, client, session):
        pages = ("/api/overview", "/api/meters/m-csv", "/api/audit")
        downloads = await _stalled_then_read(app, client, session, targets, pages)
        for limit, count in ((1000, 3), (READINGS - 1, 2)):  # a page ends at the missing 2000th
            walked = await _walk(client, "/api/v1/meters/m-csv/readings", {**period, "limit": str(limit)})
            assert walked == (intervals, count), limit
            lines = await _walk(client, "/api/v1/meters/m-csv/readings.csv", {**period, "limit": str(limit)})
            assert (_as_csv(intervals).splitlines(keepends=True)[1:], count) == lines, limit
    readings_json, readings_csv_, daily_csv, fleet = downloads
    assert all(d.status == 200 for d in downloads)
    assert json.loads(readings_json.body) == {
        "next": None,
        "columns": list(intervals[0]),
        "rows": intervals,
    }
    assert readings_csv_.body.decode() == _as_csv(intervals)
    assert daily_csv.body.decode() == _as_csv(registers)
    assert json.loads(fleet.body)["rows"] == [r for r in registers if r["day"] == fleet_day]
