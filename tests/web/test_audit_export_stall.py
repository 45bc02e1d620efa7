"""``/audit.csv`` holds no pooled connection while its client reads: three downloads whose clients
stop reading at the first chunk (more than the console's two connections per pool) leave the other
pages answering, and each download, once read on, is whole (every entry, oldest first, once).

The application is driven through ASGI in this process: a download's ``send`` stands for a client
that does not read, as a full socket makes the server's send wait."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import asyncpg
import httpx

from headend.config import WebConfig
from headend.web.app import create_app
from headend.web.identity import SESSION_COOKIE
from tests.support.logins import desk_dsn, report_dsn
from tests.support.operators import PASSWORD, add_operators
from tests.support.waiting import wait_until

ENTRIES = 3000  # several pages and CSV chunks
DOWNLOADS = 3  # more than the pool's connections

Message = MutableMapping[str, Any]


class StalledDownload:
    """A GET of ``/audit.csv`` whose client stops reading at the first body chunk until ``resume``."""

    def __init__(self, app: Callable[..., Awaitable[None]], session: str) -> None:
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
            "path": "/audit.csv",
            "raw_path": b"/audit.csv",
            "query_string": b"",
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


async def _seed(dsn: str) -> None:
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


async def test_stalled_audit_downloads_do_not_starve_the_console(pg_dsn: str) -> None:
    await _seed(pg_dsn)
    app = create_app(WebConfig(pool_size=2), desk_dsn(pg_dsn), report_dsn(pg_dsn))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            form = await client.get("/signin")
            signin = form.text.split('name="signin" value="', 1)[1].split('"', 1)[0]
            fields = {"operator": "1", "password": PASSWORD, "signin": signin}
            done = await client.post("/signin", data=fields)  # a viewer, as a browser signs in
            assert done.status_code == 303, done.text[:300]
            session = str(done.cookies[SESSION_COOKIE])
            downloads = [StalledDownload(app, session) for _ in range(DOWNLOADS)]
            try:
                await wait_until(
                    lambda: all(d.stalled.is_set() for d in downloads), 20, "every download's first chunk"
                )
                async with asyncio.timeout(10):  # each page takes a connection of both pools
                    for path in ("/api/overview", "/api/audit", "/api/campaigns"):
                        answered = await client.get(path)
                        assert answered.status_code == 200, (path, answered.text[:300])
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
    for download in downloads:
        assert download.status == 200
        lines = list(csv.reader(io.StringIO(download.body.decode())))
        assert lines[0] == ["id", "at", "actor", "action", "entity", "entity_id", "reason", "details"]
        ids = [int(row[0]) for row in lines[1:]]
        assert ids == sorted(set(ids))  # oldest first, each once
        runs = [row[5] for row in lines[1:] if row[3] == "billing.run"]
        assert runs == [str(n) for n in range(1, ENTRIES + 1)]
